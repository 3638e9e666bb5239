"""Each task / method trains end to end for a few steps; optimiser groups, clipping, early stopping."""
import math

import pytest
import torch
from test_data_files import make_cifar10, make_tiny_imagenet, write_uci

from mn import MetaNeighborhoodsClassifier
from mn.data import load_dataset, prepare
from mn.training import Run, build_model, make_config, train
from mn.training.distributed import Context
from mn.training.optim import build_optimizer

CPU = Context(0, 1, torch.device("cpu"))
QUICK = dict(epochs=1, max_steps_per_epoch=2, progress=False)


def _train(**flags):
    result = train(make_config(flags={**QUICK, **flags}), CPU, log=lambda line: None)
    return result["runs"], result["summary"]


@pytest.mark.parametrize("flags", [
    dict(method="vanilla", classifier="dot", optimizer="sgd"),
    dict(method="vanilla", classifier="cosine", optimizer="adamw"),
    dict(method="mn", inner_steps=3, inner_lr="diagonal", entry_dropout=0.5, num_entries=50),
    dict(method="mn", aux_weight=0.0, num_entries=50),
], ids=["dot-sgd", "cosine-adamw", "mn-ft3-diagonal-dropout", "mn-no-aux"])
def test_digits_methods_train(flags):
    runs, summary = _train(dataset="digits", **flags)
    assert len(runs) == 1 and 0 <= runs[0]["test_accuracy"] <= 1 and math.isfinite(runs[0]["test_loss"])


@pytest.mark.parametrize("method", ["vanilla", "mn"])
def test_spirals_and_diabetes_cross_validation(method):
    runs, _ = _train(dataset="spirals", method=method)
    assert runs[0]["test_accuracy"] > 0
    runs, summary = _train(dataset="diabetes", method=method, folds=3, num_entries=20)
    assert [r["fold"] for r in runs] == [0, 1, 2] and all(math.isfinite(r["test_mse"]) for r in runs)
    assert summary["metric"] == "test_mse" and len(summary["cv_per_seed"]) == 1


@pytest.mark.parametrize("backbone", ["resnet29", "densenet40bc"])
def test_cifar_backbones_train_on_fake_cifar(tmp_path, backbone):
    make_cifar10(tmp_path)
    runs, _ = _train(dataset="cifar10", data_dir=str(tmp_path), backbone=backbone, batch_size=4, num_entries=16,
                     max_steps_per_epoch=1, val_fraction=0.2)
    assert len(runs) == 1


def test_tiny_imagenet_and_uci_train_from_fake_files(tmp_path):
    make_tiny_imagenet(tmp_path)
    runs, _ = _train(dataset="tiny_imagenet", data_dir=str(tmp_path), batch_size=2, num_entries=8,
                     max_steps_per_epoch=1, val_fraction=0.25)
    assert len(runs) == 1
    write_uci(tmp_path, "gom", rows=40)
    runs, _ = _train(dataset="gom", data_dir=str(tmp_path), fold=1, num_entries=8)
    assert [r["fold"] for r in runs] == [1]


def test_mn_model_is_the_paper_classifier_without_last_relu():
    cfg = make_config(flags=dict(dataset="digits", method="mn", num_entries=10))
    model = build_model(cfg, prepare(load_dataset("digits")))
    assert isinstance(model.classifier, MetaNeighborhoodsClassifier)
    assert model.classifier.backbone.final_relu is False and model.classifier.aux_weight == 1.0


def test_weight_decay_skips_dictionary_classifier_tau_alpha():
    cfg = make_config(flags=dict(dataset="digits", method="mn", num_entries=10))
    model = build_model(cfg, prepare(load_dataset("digits")))
    decayed, plain = build_optimizer(cfg, model).param_groups
    head = model.classifier.head
    no_decay = {id(p) for p in plain["params"]}
    assert decayed["weight_decay"] == 0.075 and plain["weight_decay"] == 0
    assert {id(head.keys), id(head.value_logits), id(head.weight), id(head.tau), id(head.inner_lr)} <= no_decay
    assert {id(p) for p in model.classifier.aux_head.parameters()} <= no_decay
    assert {id(p) for p in model.classifier.backbone.parameters()} == {id(p) for p in decayed["params"]}


def test_gradients_are_clipped_elementwise(monkeypatch):
    seen = []
    real_step = torch.optim.AdamW.step

    def spy(self, *a, **k):
        seen.append(max(p.grad.abs().max().item() for g in self.param_groups for p in g["params"]
                        if p.grad is not None))
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    _train(dataset="digits", method="vanilla", grad_clip=2.0 ** -10)
    assert seen and max(seen) <= 2.0 ** -10


def test_early_stopping_stops_after_patience_epochs_without_improvement():
    cfg = make_config(flags=dict(dataset="diabetes", method="vanilla", epochs=200, patience=2, lr=0.05,
                                 progress=False))
    data = prepare(load_dataset("diabetes"), fold=0, val_fraction=0.1)
    result = Run(cfg, data, CPU, seed=0, fold=0).fit()
    assert result["epochs"] < 200 and result["epochs"] - result["best_epoch"] >= 2
