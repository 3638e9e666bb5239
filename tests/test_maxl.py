"""The MAXL baseline (`mn train --method maxl`, mn/training/maxl.py): the look-ahead meta-gradient against a literal
unrolled autograd computation and finite differences in float64, the mask softmax's hierarchy, learning on digits,
exact resume, DDP against one process, every backbone and shipped classification set, the command line."""
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from mn.cli import main
from mn.data import FROM_PACKAGES, GENERATED, SHIPPED, Split, TaskData, load_dataset, prepare
from mn.models import BACKBONES, INPUT_SIZES
from mn.training import evaluate_checkpoint, load_checkpoint, make_config, train
from mn.training.distributed import Context
from mn.training.maxl import (
    LabelGenerator,
    MaxlModel,
    MaxlRun,
    MultiTaskNet,
    build_maxl,
    focal_loss,
    lookahead_lr,
    meta_gradient,
    meta_objective,
    slot_mask,
)

from helpers import assert_same_state

CPU = Context(0, 1, torch.device("cpu"))
PSI = [2, 3, 1]                       # a hierarchy with unequal psi: slots 0-1 | 2-4 | 5


def _tiny(psi=PSI, features=4, inputs=3, norm=False):
    """A float64 MAXL model small enough to differentiate literally: tanh trunks, the MAXL heads."""
    torch.manual_seed(0)
    trunk = lambda: nn.Sequential(nn.Linear(inputs, features), *([nn.BatchNorm1d(features)] if norm else []),
                                  nn.Tanh())
    net = MultiTaskNet(trunk(), features, len(psi), sum(psi))
    model = MaxlModel(net, LabelGenerator(trunk(), features, psi), focal_gamma=2.0).double()
    x = torch.randn(7, inputs, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 1, 0, 2, 1])
    return model, x, y


# -- the literal computation: the networks written out as tensor algebra, the update unrolled by hand ----------------
def _head(h, t, name):
    return torch.relu(h @ t[f"{name}.0.weight"].T + t[f"{name}.0.bias"]) @ t[f"{name}.2.weight"].T + t[f"{name}.2.bias"]


def _literal_net(t, x):
    h = torch.tanh(x @ t["trunk.0.weight"].T + t["trunk.0.bias"])
    return _head(h, t, "primary"), _head(h, t, "auxiliary")


def _literal_labels(t, x, y, psi):
    logits = _head(torch.tanh(x @ t["trunk.0.weight"].T + t["trunk.0.bias"]), t, "head")
    mask = torch.zeros(len(psi), sum(psi), dtype=x.dtype)
    for c in range(len(psi)):
        mask[c, sum(psi[:c]):sum(psi[:c + 1])] = 1
    e = torch.exp(logits - logits.max(1, keepdim=True).values) * mask[y]
    return e / e.sum(1, keepdim=True)


def _literal_focal(logits, target, gamma=2.0):
    p = torch.softmax(logits, 1)
    return -(target * (1 - p) ** gamma * torch.log(p)).sum(1)


def _literal_meta_gradient(model, x, y, alpha, lam, psi=PSI):
    theta1 = {k: v.detach().clone().requires_grad_() for k, v in model.net.named_parameters()}
    theta2 = {k: v.detach().clone().requires_grad_() for k, v in model.generator.named_parameters()}
    onehot = F.one_hot(y, len(psi)).to(x.dtype)
    labels = _literal_labels(theta2, x, y, psi)
    primary, auxiliary = _literal_net(theta1, x)
    loss = _literal_focal(primary, onehot).mean() + _literal_focal(auxiliary, labels).mean()
    grads = torch.autograd.grad(loss, list(theta1.values()), create_graph=True)
    theta1_plus = {k: v - alpha * g for (k, v), g in zip(theta1.items(), grads)}
    primary_plus, _ = _literal_net(theta1_plus, x)
    pbar = labels.mean(0)
    outer = _literal_focal(primary_plus, onehot).mean() + lam * (pbar * torch.log(pbar + 1e-20)).sum()
    return torch.autograd.grad(outer, list(theta2.values()))


@pytest.mark.parametrize("lam", [0.0, 0.2])
def test_lookahead_meta_gradient_equals_the_literal_unrolled_update(lam):
    model, x, y = _tiny()
    alpha = 0.5
    got = meta_gradient(model, x, y, alpha=alpha, entropy_weight=lam)
    expected = _literal_meta_gradient(model, x, y, alpha, lam)
    assert len(got) == len(expected) == 6
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)
    # The primary loss alone reaches the generator only through the second-order term: it must be there.
    assert sum(g.abs().sum() for g in got) > 1e-3


def test_meta_gradient_matches_finite_differences():
    model, x, y = _tiny()
    kwargs = dict(alpha=0.5, entropy_weight=0.2)
    grads = meta_gradient(model, x, y, **kwargs)
    params = list(model.generator.parameters())
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        direction = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]
        values = []
        for sign in (1, -1):
            with torch.no_grad():
                for p, d in zip(params, direction):
                    p.add_(sign * 1e-5 * d)
            values.append(meta_objective(model, x, y, **kwargs).item())
            with torch.no_grad():
                for p, d in zip(params, direction):
                    p.sub_(sign * 1e-5 * d)
        numeric = (values[0] - values[1]) / 2e-5
        analytic = sum((g * d).sum() for g, d in zip(grads, direction)).item()
        assert numeric == pytest.approx(analytic, rel=1e-6, abs=1e-9)


def test_the_lookahead_leaves_batch_norm_statistics_and_weights_alone():
    model, x, y = _tiny(norm=True)
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    meta_gradient(model, x, y, alpha=0.5, entropy_weight=0.2)
    after = model.net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


# -- the hierarchy -----------------------------------------------------------------------------------------------------
def test_slot_mask_gives_each_class_its_psi_consecutive_slots():
    expected = torch.tensor([[1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 1, 0], [0, 0, 0, 0, 0, 1]], dtype=torch.bool)
    assert torch.equal(slot_mask(PSI), expected)
    with pytest.raises(ValueError, match="psi must be"):
        slot_mask([2, 0])


def test_generated_labels_put_zero_mass_outside_the_primary_class_slots():
    psi = [2, 3, 1, 4]
    torch.manual_seed(0)
    gen = LabelGenerator(nn.Sequential(nn.Linear(5, 8), nn.ReLU()), 8, psi)
    with torch.no_grad():                               # large logits: a leak would show
        gen.head[2].weight.mul_(50)
    x, y = torch.randn(200, 5), torch.arange(200) % 4
    x.requires_grad_()
    labels = gen(x, y)
    inside = slot_mask(psi)[y]
    assert torch.equal(labels[~inside], torch.zeros_like(labels[~inside]))       # exactly zero, not 1e-8
    assert (labels[inside] > 0).all()
    torch.testing.assert_close(labels.sum(1), torch.ones(200))
    # No gradient flows out of the slots outside: a loss on them is constant.
    (grad,) = torch.autograd.grad((labels * ~inside).sum(), x)
    assert torch.equal(grad, torch.zeros_like(grad))


def test_the_digits_generator_labels_each_digit_within_its_five_slots():
    cfg = make_config(flags=dict(dataset="digits", method="maxl"))
    data = prepare(load_dataset("digits"), val_fraction=0.1)
    torch.manual_seed(0)
    model = build_maxl(cfg, data)
    x, y = data.inputs(data.train.x[:64]), data.train.y[:64]
    with torch.no_grad():
        labels = model.generator(x, y)
    assert labels.shape == (64, 50)
    slot_class = torch.arange(50) // 5
    assert torch.equal(labels * (slot_class[None] != y[:, None]), torch.zeros_like(labels))
    torch.testing.assert_close(labels.sum(1), torch.ones(64))


def test_focal_loss_with_gamma_zero_is_the_cross_entropy():
    logits, y = torch.randn(5, 4, dtype=torch.float64), torch.tensor([0, 3, 1, 1, 2])
    torch.testing.assert_close(focal_loss(logits, y, 0.0), F.cross_entropy(logits, y, reduction="none"))
    torch.testing.assert_close(focal_loss(logits, F.one_hot(y, 4).double(), 2.0), focal_loss(logits, y, 2.0))
    assert (focal_loss(logits, y, 2.0) < focal_loss(logits, y, 0.0)).all()


def test_lookahead_rate_follows_the_schedule():
    cfg = make_config(flags=dict(dataset="digits", method="maxl", lr_milestones=[2, 4], lr_decay=0.5))
    assert [lookahead_lr(cfg, e) for e in (0, 1, 2, 3, 4)] == pytest.approx([0.01, 0.01, 0.005, 0.005, 0.0025])


# -- training -------------------------------------------------------------------------------------------------------
def _run(out_dir, epochs, resume=False, **flags):
    cfg = make_config(flags=dict(dict(dataset="digits", method="maxl", max_steps_per_epoch=2, batch_size=64,
                                      lr_milestones=[1], progress=False, epochs=epochs, out_dir=str(out_dir),
                                      resume=resume), **flags))
    return train(cfg, CPU, log=lambda line: None)["runs"][0]


def test_a_short_digits_run_learns(tmp_path):
    result = _run(tmp_path, epochs=2, max_steps_per_epoch=None, batch_size=128, lr_milestones=[])
    assert result["test_accuracy"] > 0.6, result           # chance is 0.1
    _, last = load_checkpoint(tmp_path / "seed0" / "last.pt")
    torch.manual_seed(0)
    cfg = make_config(flags=dict(dataset="digits", method="maxl"))
    initial = build_maxl(cfg, prepare(load_dataset("digits"), val_fraction=0.1)).state_dict()
    moved = [k for k in initial if not torch.equal(initial[k], last["model"][k])]
    assert any(k.startswith("generator.") for k in moved), "the label generator never moved"
    assert any(k.startswith("net.") for k in moved)
    assert last["gen_optimizer"]["state"], "no generator optimiser state"


def test_resume_gives_the_identical_continuation(tmp_path):
    straight = _run(tmp_path / "straight", epochs=3)
    _run(tmp_path / "split", epochs=1)
    resumed = _run(tmp_path / "split", epochs=3, resume=True)
    _, a = load_checkpoint(tmp_path / "straight" / "seed0" / "last.pt")
    _, b = load_checkpoint(tmp_path / "split" / "seed0" / "last.pt")
    assert a["epoch"] == b["epoch"] == 3
    assert any(k.startswith("generator.") for k in a["model"]) and any(k.startswith("net.") for k in a["model"])
    for key in ("model", "optimizer", "scheduler", "gen_optimizer", "gen_scheduler", "best_model"):
        assert_same_state(a[key], b[key], key)
    assert a["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-4), "step decay at the milestone"
    assert a["gen_optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-4), "the generator's rate decays too"
    assert straight == resumed
    lines = (tmp_path / "split" / "seed0" / "metrics.jsonl").read_text().splitlines()
    assert sum('"event": "epoch"' in line for line in lines) == 3
    evaluated = evaluate_checkpoint(tmp_path / "split" / "seed0" / "best.pt")
    assert evaluated["method"] == "maxl" and evaluated["accuracy"] == pytest.approx(resumed["test_accuracy"])


def test_resume_refuses_another_hierarchy_and_applies_a_new_generator_rate(tmp_path, capsys):
    args = ["train", "--dataset", "digits", "--method", "maxl", "--epochs", "1", "--max-steps-per-epoch", "2",
            "--out-dir", str(tmp_path), "--no-progress"]
    assert main(args) == 0
    capsys.readouterr()
    assert main([*args[:-3], "--epochs", "2", "--out-dir", str(tmp_path), "--resume", "--maxl-psi", "3"]) == 2
    assert "maxl_psi (5 -> 3)" in capsys.readouterr().err
    assert main([*args[:-3], "--epochs", "2", "--out-dir", str(tmp_path), "--resume", "--maxl-gen-lr", "0.01",
                 "--no-progress"]) == 0
    _, state = load_checkpoint(tmp_path / "seed0" / "last.pt")
    assert state["epoch"] == 2
    assert state["gen_optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.01)
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-3)


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo")
def test_two_process_ddp_matches_one_process(tmp_path):
    # A long look-ahead step, so the meta-gradient of the primary loss weighs as much as the entropy's.
    args = ["train", "--dataset", "digits", "--method", "maxl", "--epochs", "1", "--max-steps-per-epoch", "2",
            "--batch-size", "32", "--maxl-lookahead-lr", "0.5", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "mn", *args, "--out-dir", str(tmp_path / "one")], env=env, check=True,
                   capture_output=True, timeout=300)
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "mn", *args, "--out-dir", str(tmp_path / "two")], env=env, capture_output=True,
                         text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    _, one = load_checkpoint(tmp_path / "one" / "seed0" / "last.pt")
    _, two = load_checkpoint(tmp_path / "two" / "seed0" / "last.pt")
    # Adam's first steps hide a gradient's scale; its moments do not, so they are compared too.
    for key in ("optimizer", "gen_optimizer"):
        for index, moments in one[key]["state"].items():
            for name in ("exp_avg", "exp_avg_sq"):
                torch.testing.assert_close(two[key]["state"][index][name], moments[name], rtol=1e-4, atol=1e-9,
                                           msg=lambda m: f"{key} {index} {name}: {m}")
    for name, tensor in one["model"].items():
        torch.testing.assert_close(two["model"][name], tensor, rtol=1e-4, atol=1e-5, msg=name)
    assert ddp.stdout.count('"event": "summary"') == 1, "only rank 0 prints"


# -- every backbone, every shipped classification set, the command line ------------------------------------------------
def _images(channels=3, size=16, classes=10, n=4):
    x = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8)
    y = torch.arange(n) % classes
    return prepare(TaskData("fake", "classification", "image", Split(x, y), Split(x, y), num_outputs=classes),
                   val_fraction=0.0)


@pytest.mark.parametrize("backbone", [b for b in BACKBONES if b not in INPUT_SIZES])    # 16x16 fakes
def test_every_image_backbone_takes_both_steps(backbone):
    data = _images()
    cfg = make_config(flags=dict(dataset="cifar10", method="maxl", backbone=backbone))
    torch.manual_seed(0)
    model = build_maxl(cfg, data).train()
    x, y = data.inputs(data.train.x), data.train.y
    primary, losses = model(x, y)
    assert primary.shape == (4, 10) and losses.shape == (4,) and torch.isfinite(losses).all()
    grads = meta_gradient(model, x, y, alpha=0.01, entropy_weight=0.2)
    assert all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("dataset, backbone", [*((name, None) for name in (*SHIPPED, *GENERATED, *FROM_PACKAGES)),
                                               ("spirals", "mlp"), ("mixture", "mlp_wide")])
def test_every_data_set_that_ships_trains_or_is_refused(tmp_path, dataset, backbone, capsys):
    """Each classification set with its default backbone (and the other tabular trunks) trains a step of both
    passes; a regression set is refused by name."""
    args = ["train", "--dataset", dataset, "--method", "maxl", "--epochs", "1", "--max-steps-per-epoch", "1",
            "--batch-size", "32", "--out-dir", str(tmp_path), "--no-progress"]
    code = main(args + (["--backbone", backbone] if backbone else []))
    captured = capsys.readouterr()
    if load_dataset(dataset).task == "regression":
        assert code == 2 and f"needs a classification data set; {dataset} is a regression set" in captured.err
        return
    assert code == 0, captured.err
    summary = json.loads(captured.out.splitlines()[-1])
    assert summary["method"] == "maxl" and 0 <= summary["mean"] <= 1


def test_maxl_refuses_regression_and_mismatched_generators(tmp_path, capsys):
    assert main(["train", "--dataset", "diabetes", "--method", "maxl", "--out-dir", str(tmp_path)]) == 2
    assert "method 'maxl' needs a classification data set; diabetes is a regression set" in capsys.readouterr().err
    assert main(["train", "--dataset", "digits", "--method", "maxl", "--maxl-generator", "mlp", "--out-dir",
                 str(tmp_path / "g")]) == 2
    assert "maxl_generator must be one of the image backbones" in capsys.readouterr().err
    assert main(["train", "--dataset", "digits", "--method", "maxl", "--maxl-psi", "0", "--dry-run"]) == 2
    assert "maxl_psi must be a positive integer, got 0" in capsys.readouterr().err


def test_dry_run_shows_the_maxl_defaults(capsys):
    assert main(["train", "--dataset", "digits", "--method", "maxl", "--dry-run"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["method"] == "maxl"
    assert {k: v for k, v in record.items() if k.startswith("maxl_")} == {
        "maxl_psi": 5, "maxl_generator": None, "maxl_gen_lr": 1e-3, "maxl_gen_weight_decay": 5e-4,
        "maxl_lookahead_lr": 0.01, "maxl_entropy_weight": 0.2, "maxl_focal_gamma": 2.0}


def test_a_maxl_configuration_runs_as_a_maxl_run():
    from mn.training import Run
    cfg = make_config(flags=dict(dataset="spirals", method="maxl", progress=False))
    data = prepare(load_dataset("spirals"), val_fraction=0.1)
    run = Run(cfg, data, CPU, seed=0)
    assert isinstance(run, MaxlRun) and run.ddp is run.model.net
    assert {id(p) for g in run.gen_optimizer.param_groups for p in g["params"]} == {
        id(p) for p in run.model.generator.parameters()}
    assert {id(p) for g in run.optimizer.param_groups for p in g["params"]} == {
        id(p) for p in run.model.net.parameters()}
