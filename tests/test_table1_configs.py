"""configs/table1/: one `mn train --config` file per cell of the paper's Table 1, written by make.py, holding only
what defines the cell (the rest is the data set's defaults)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mn.cli import main
from mn.training.config import dataset_defaults, make_config, read_config_file

FOLDER = Path(__file__).resolve().parents[1] / "configs" / "table1"
DATASETS = ("cifar10", "cifar100", "cinic10", "tiny_imagenet")
BACKBONES = ("densenet40bc", "resnet29", "resnet56")
# row -> what defines it, in the paper's column order
ROWS = {
    "vanilla-dot-sgd": dict(method="vanilla", classifier="dot", optimizer="sgd", lr=0.1),
    "vanilla-dot-adamw": dict(method="vanilla", classifier="dot", optimizer="adamw"),
    "vanilla-cos-sgd": dict(method="vanilla", classifier="cosine", optimizer="sgd", lr=0.1),
    "vanilla-cos-adamw": dict(method="vanilla", classifier="cosine", optimizer="adamw"),
    "maxl": dict(method="maxl"),
    "mn-ft1-S": dict(method="mn", classifier="cosine", optimizer="adamw", inner_steps=1, inner_lr="scalar"),
    "mn-ft1-D": dict(method="mn", classifier="cosine", optimizer="adamw", inner_steps=1, inner_lr="diagonal"),
    "mn-ft3-S": dict(method="mn", classifier="cosine", optimizer="adamw", inner_steps=3, inner_lr="scalar"),
    "mn-ft3-D": dict(method="mn", classifier="cosine", optimizer="adamw", inner_steps=3, inner_lr="diagonal"),
}
EXPECTED = {f"{d}-{b}-{r}.json": dict(dataset=d, backbone=b, **s) for d in DATASETS for b in BACKBONES
            for r, s in ROWS.items()}


def test_the_folder_holds_exactly_one_file_per_cell_with_only_what_defines_it():
    assert sorted(p.name for p in FOLDER.glob("*.json")) == sorted(EXPECTED)
    assert len(EXPECTED) == 4 * 3 * 9
    for name, settings in EXPECTED.items():
        assert read_config_file(FOLDER / name) == settings, name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_cell_loads_and_inherits_the_rest_from_the_data_sets_defaults(name):
    cfg = make_config(read_config_file(FOLDER / name))
    for key, value in EXPECTED[name].items():
        assert getattr(cfg, key) == value, key
    defaults = dataset_defaults(cfg.dataset)
    for key in ("epochs", "lr_milestones", "num_entries", "gamma"):
        assert getattr(cfg, key) == defaults[key], key


def test_make_py_regenerates_the_files_byte_for_byte(tmp_path):
    (tmp_path / "stale.json").write_text("{}")
    done = subprocess.run([sys.executable, str(FOLDER / "make.py"), "--out", str(tmp_path)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "wrote 108 cells" in done.stdout and "removed stale.json" in done.stdout
    made = {p.name: p.read_bytes() for p in tmp_path.glob("*.json")}
    assert made == {p.name: p.read_bytes() for p in FOLDER.glob("*.json")}


@pytest.mark.parametrize("name", ["cifar10-resnet29-mn-ft1-D.json", "tiny_imagenet-densenet40bc-vanilla-dot-sgd.json",
                                  "cinic10-resnet56-mn-ft3-S.json", "cifar100-resnet56-maxl.json"])
def test_mn_train_dry_run_takes_a_cell(name, capsys, tmp_path):
    capsys.readouterr()
    assert main(["train", "--config", str(FOLDER / name), "--out-dir", str(tmp_path / "run"), "--dry-run"]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert {k: resolved[k] for k in EXPECTED[name]} == EXPECTED[name]
    assert resolved["epochs"] == dataset_defaults(resolved["dataset"])["epochs"]
    assert not (tmp_path / "run").exists()


def test_the_folder_says_how_to_run_a_cell_and_gather_the_table():
    text = (FOLDER / "README.md").read_text()
    assert "mn train --config configs/table1/" in text and "mn table runs/table1/*" in text
    assert "python configs/table1/make.py" in text
