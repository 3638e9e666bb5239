"""From a loaded data set to normalised train / validation / test splits.

Normalisation as the paper says for regression (every input dimension and target to zero mean, unit variance,
statistics of the training split only), and per channel for images. Regression sets without a test split are
evaluated by k-fold cross-validation: `fold` picks the test fold. Validation splits (for best-model selection
and early stopping) are the set's own where it has one, else a random share of the training split.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .augment import _check_images, augment_batch
from .base import DataFormatError, Split, TaskData

__all__ = ["Prepared", "prepare", "kfold_split"]


@dataclass
class Prepared:
    """Splits ready to train on. Image inputs stay in their stored dtype (uint8 for natural images, to keep
    CIFAR-size sets small) and are normalised per batch by `inputs`; tabular inputs are normalised here.
    target_std: the regression targets' training-split std (MSEs are reported in normalised units, as in the
    paper's Table 2; multiply by target_std**2 for the original units).
    augment: whether `inputs` augments training batches (the paper's pipeline, mn/data/augment.py)."""

    data: TaskData
    train: Split
    val: Split | None
    test: Split
    mean: torch.Tensor | None = None       # per-channel image statistics (C,)
    std: torch.Tensor | None = None
    target_std: torch.Tensor | None = None
    augment: bool = False

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])

    def inputs(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """A batch of stored inputs -> float32 network inputs. With a generator (training) and `augment` on,
        the stored uint8 images are first augmented as in the paper's code (random 4-pixel-padded crop and
        flip, AutoAugment's CIFAR-10 policy, 16 x 16 Cutout; `augment_batch`), then normalised per channel.
        Without a generator (evaluation) they are only normalised."""
        if self.mean is None:
            return x
        if generator is not None and self.augment:
            x = augment_batch(x, generator)
        return (x.float() - self.mean[:, None, None]) / self.std[:, None, None]


def _where(data: TaskData) -> str:
    """The file a data set came from where it is one file, else its name (for error messages)."""
    return str(data.source) if data.source is not None else data.name


def _standardise(train: torch.Tensor, *others: torch.Tensor | None, where: str, what: str):
    """Zero mean, unit variance with the training split's statistics; DataFormatError naming `where` when the
    values are so large that the statistics or the results overflow float32 (inf, NaN)."""
    mean, std = train.mean(0), train.std(0)
    std = torch.where(std > 0, std, torch.ones_like(std))          # constant columns stay, at zero
    out = [None if t is None else (t - mean) / std for t in (train, *others)]
    if not all(bool(torch.isfinite(t).all()) for t in (mean, std, *[t for t in out if t is not None])):
        raise DataFormatError(f"{where}: standardising the {what} overflows float32 (values up to "
                              f"{train.abs().max().item():.3g}); rescale the data")
    return out, std


def _check_rows(data: TaskData, n: int, folds: int, val_fraction: float) -> None:
    """DataFormatError naming the file when a set evaluated by cross-validation has too few rows: fewer than
    `folds` (a fold without test rows), or too few for every fold to keep 2 training rows (for a standard
    deviation) after its test rows and its validation share. (A `folds` below 2 is kfold_split's to refuse.)"""
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        return
    def left(rows: int) -> int:      # training rows of the smallest fold, after its test rows and validation share
        train = rows - math.ceil(rows / folds)
        return train - (max(1, round(val_fraction * train)) if val_fraction > 0 else 0)

    def need() -> int:               # the fewest rows that pass, for the error messages only
        return next(rows for rows in range(folds, folds + 10**6) if left(rows) >= 2)

    if n < folds:
        raise DataFormatError(f"{_where(data)}: {n} row(s) is fewer than the {folds} cross-validation folds; it "
                              f"needs at least {need()} rows (or pass a smaller --folds, at least 2)")
    if left(n) < 2:
        raise DataFormatError(f"{_where(data)}: {n} rows leave {max(left(n), 0)} training row(s) in a fold after "
                              f"its test rows and the validation share ({val_fraction}); it needs at least 2, i.e. "
                              f"{need()} rows: use more rows, fewer --folds or a smaller --val-fraction")


def kfold_split(n: int, fold: int, folds: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, test) of fold `fold` of a seeded shuffled `folds`-fold partition of range(n)."""
    if isinstance(folds, bool) or not isinstance(folds, int) or not 2 <= folds <= n:
        raise ValueError(f"folds must be an integer in [2, {n}], got {folds!r}")
    if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < folds:
        raise ValueError(f"fold must be an integer in [0, {folds}), got {fold!r}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    parts = torch.tensor_split(perm, folds)
    test = parts[fold]
    train = torch.cat([p for i, p in enumerate(parts) if i != fold])
    return train, test


def _check_augment(data: TaskData, augment) -> bool:
    """`augment` resolved (None: the data set's default); ValueError naming the set when it is on for inputs
    that are not 8-bit images (N, C, H, W) with 1 or 3 channels, which AutoAugment's PIL ops need."""
    if augment is not None and not isinstance(augment, bool):
        raise ValueError(f"augment must be None, True or False, got {augment!r}")
    on = data.augment if augment is None else augment
    if not on:
        return False
    need = "augment=True needs uint8 images (N, C, H, W) with C = 1 or 3 (the paper's augmentation of natural images)"
    if data.kind != "image":
        raise ValueError(f"{need}; {data.name} has {data.kind} inputs")
    try:
        _check_images(data.train.x, f"{data.name}'s inputs")
    except (TypeError, ValueError) as e:
        raise ValueError(f"{need}; {e}") from None
    return True


def prepare(data: TaskData, *, val_fraction: float = 0.1, fold: int | None = None, folds: int = 5,
            split_seed: int = 0, augment: bool | None = None) -> Prepared:
    """Normalised splits of `data`. fold: the test fold for sets without a test split (cross-validation);
    val_fraction: share of the training split held out for validation when the set has no validation split
    (0 for none). split_seed fixes the partitions, independently of the training seed. augment: the paper's
    training augmentation (mn/data/augment.py) on or off; None takes the data set's default (`data.augment`)."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    augment = _check_augment(data, augment)
    train, test, val = data.train, data.test, data.val
    if test is None:
        if fold is None:
            raise ValueError(f"{data.name} has no test split: pass fold (0..{folds - 1}) for cross-validation")
        _check_rows(data, len(train), folds, val_fraction)
        train_idx, test_idx = kfold_split(len(train), fold, folds, split_seed)
        train, test = train.subset(train_idx), train.subset(test_idx)
    elif fold is not None:
        raise ValueError(f"{data.name} has a fixed test split; fold must be None, got {fold!r}")
    if val is None and val_fraction > 0:
        perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(split_seed + 1))
        n_val = max(1, round(val_fraction * len(train)))
        val, train = train.subset(perm[:n_val]), train.subset(perm[n_val:])
    if data.kind == "image":
        x = train.x.float()
        mean, std = x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3)).clamp_min(1e-6)
        return Prepared(data, train, val, test, mean=mean, std=std, augment=augment)
    has_val = val is not None
    where = _where(data)
    (xt, xv, xs), _ = _standardise(train.x, val.x if has_val else None, test.x, where=where, what="inputs")
    target_std = None
    if data.task == "regression":
        (yt, yv, ys), target_std = _standardise(train.y, val.y if has_val else None, test.y, where=where,
                                                what="targets")
    else:
        yt, yv, ys = train.y, val.y if has_val else None, test.y
    return Prepared(data, Split(xt, yt), Split(xv, yv) if has_val else None, Split(xs, ys), target_std=target_std)
