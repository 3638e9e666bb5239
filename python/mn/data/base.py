"""What every loader returns, and the errors for missing or malformed data files."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

TASKS = ("classification", "regression")


class DataFormatError(ValueError):
    """A data file exists but is not in the expected format (the message names the file)."""


@dataclass
class Split:
    """Inputs x (N, ...) and targets y: class indices (N,) int64, or regression targets (N, out) float32."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self):
        if len(self.x) != len(self.y):
            raise ValueError(f"x and y must have the same length, got {len(self.x)} and {len(self.y)}")

    def __len__(self) -> int:
        return len(self.x)

    def subset(self, index: torch.Tensor) -> Split:
        return Split(self.x[index], self.y[index])


@dataclass
class TaskData:
    """A loaded data set, before normalisation.

    kind "image": x (N, C, H, W), uint8 or float; "tabular": x (N, d) float32.
    test is None for sets evaluated by k-fold cross-validation (the regression sets); val is None where the
    set has no official validation split (one is then held out of train).
    augment: the default of `prepare(augment=None)`: on, training batches get the paper's augmentation (random
    4-pixel-padded crop and flip, AutoAugment's CIFAR-10 policy, Cutout; mn/data/augment.py); uint8 natural
    images with 1 or 3 channels only.
    source: the file it was read from where it is one file (CSV, UCI sets), for error messages.
    """

    name: str
    task: str
    kind: str
    train: Split
    test: Split | None
    num_outputs: int
    val: Split | None = None
    augment: bool = False
    class_names: tuple[str, ...] | None = None
    source: Path | None = None

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")


def require(path: Path, dataset: str, how: str) -> Path:
    """`path` if it exists, else FileNotFoundError telling where the data set's files belong and how to get them."""
    if not path.exists():
        raise FileNotFoundError(f"{dataset} not found: expected {path}. {how} (nothing is downloaded by mn; "
                                f"pass --data-dir to look elsewhere)")
    return path
