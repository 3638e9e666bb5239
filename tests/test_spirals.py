"""End to end on the two-spirals toy: Meta-Neighborhoods makes a linear classifier fit a non-linear boundary."""
import torch
from torch import nn

from mn.data import make_spirals
from mn.demo import accuracy, run_spirals, train_classifier


def test_spirals_data_is_deterministic_and_balanced():
    x, y = make_spirals(100, seed=3)
    x2, y2 = make_spirals(100, seed=3)
    assert x.shape == (200, 2) and torch.equal(x, x2) and torch.equal(y, y2) and y.sum() == 100


def test_linear_classifier_cannot_fit_spirals():
    """The baseline's ceiling, long-trained: no line separates the arms."""
    x, y = make_spirals(500, seed=0)
    xt, yt = make_spirals(500, seed=1000)
    torch.manual_seed(0)
    assert accuracy(train_classifier(nn.Linear(2, 2), x, y, steps=1500), xt, yt) < 0.75


def test_meta_neighborhoods_fit_spirals():
    rows = {name: acc for name, acc, _ in run_spirals(steps=500, seed=0)}
    assert rows["linear + MN"] >= 0.95, rows
    assert rows["linear"] < 0.75, rows
