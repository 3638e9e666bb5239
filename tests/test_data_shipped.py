"""Shipped data sets (digits, diabetes, spirals) and the normalisation / split logic every set goes through."""
import pytest
import torch

from mn.data import kfold_split, load_dataset, prepare
from mn.data.augment import random_crop_flip


def test_digits_split_and_per_channel_normalisation():
    data = prepare(load_dataset("digits"), val_fraction=0.1)
    assert data.train.x.shape[1:] == (1, 8, 8) and len(data.test) == 360
    assert len(data.train) + len(data.val) + len(data.test) == 1797
    x = data.inputs(data.train.x)
    assert abs(x.mean().item()) < 1e-4 and abs(x.std().item() - 1) < 1e-3


def test_diabetes_cross_validation_normalises_inputs_and_targets_on_train_only():
    raw = load_dataset("diabetes")
    data = prepare(raw, fold=2, folds=5, val_fraction=0.1)
    assert len(data.train) + len(data.val) + len(data.test) == 442
    assert torch.allclose(data.train.x.mean(0), torch.zeros(10), atol=1e-5)
    assert torch.allclose(data.train.y.std(0), torch.ones(1), atol=1e-5)
    assert data.target_std.item() > 1, "target std is kept to convert MSEs back to original units"
    with pytest.raises(ValueError, match="pass fold"):
        prepare(raw)


def test_kfold_partitions_every_index_once():
    tests = [kfold_split(23, f, 5, seed=1)[1] for f in range(5)]
    assert sorted(torch.cat(tests).tolist()) == list(range(23))
    train, test = kfold_split(23, 0, 5, seed=1)
    assert set(train.tolist()).isdisjoint(test.tolist())
    with pytest.raises(ValueError, match="fold must be"):
        kfold_split(23, 5, 5, seed=1)


def test_spirals_train_and_test_differ():
    data = load_dataset("spirals")
    assert data.train.x.shape == (1000, 2) and not torch.equal(data.train.x, data.test.x)


def test_random_crop_flip_keeps_shape_and_content():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6) + 1
    out = random_crop_flip(x, torch.Generator().manual_seed(0), pad=2)
    assert out.shape == x.shape
    # every non-padding value of the crop comes from the same image
    for b in range(2):
        assert set(out[b][out[b] != 0].tolist()) <= set(x[b].flatten().tolist())


def test_unknown_dataset_is_named():
    with pytest.raises(ValueError, match="dataset must be one of"):
        load_dataset("mnist")
