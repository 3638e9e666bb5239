"""Data sets that are always available: sklearn digits and diabetes (shipped with scikit-learn) and the
generated two-spirals toy."""
from __future__ import annotations

import torch

from .base import Split, TaskData
from .spirals import make_spirals

# Coarse grouping of the ten digits for the induction analysis (Fig. 6): consecutive pairs, so that telling the
# two digits of a group apart is never part of the supervision. coarse label = index of the digit's group.
DIGIT_GROUPS = ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))
# "digits_2groups": two coarse classes of five consecutive digits each (issue 16: digits in 2 coarse groups).
DIGIT_HALVES = ((0, 1, 2, 3, 4), (5, 6, 7, 8, 9))
# the coarse-labelled digit sets: name -> groups (coarse label = index of the digit's group)
DIGIT_GROUPINGS = {"digits_coarse": DIGIT_GROUPS, "digits_2groups": DIGIT_HALVES}


def load_digits(grouping: str | None = None) -> TaskData:
    """sklearn digits: 1797 8x8 grey images (values 0..16), 10 classes. x (N, 1, 8, 8) float32.
    grouping: None for the digits themselves ("digits"), or a key of DIGIT_GROUPINGS, the data set's name: the
    same images and splits labelled by the index of the digit's group ("digits_coarse": DIGIT_GROUPS, 5 classes;
    "digits_2groups": DIGIT_HALVES, 2 classes).

    Split once with a fixed seed (independent of the training seed, so every run sees the same test set):
    20% test, stratified by digit; the validation split is carved from the rest by `prepare`.
    """
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    if grouping is not None and (not isinstance(grouping, str) or grouping not in DIGIT_GROUPINGS):
        raise ValueError(f"grouping must be None or one of {', '.join(DIGIT_GROUPINGS)}, got {grouping!r}")
    bunch = sk_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32)[:, None]
    y = torch.tensor(bunch.target, dtype=torch.int64)
    train_idx, test_idx = train_test_split(torch.arange(len(y)).numpy(), test_size=0.2, random_state=0,
                                           stratify=y.numpy())
    train_idx, test_idx = torch.as_tensor(train_idx), torch.as_tensor(test_idx)
    classes = 10
    if grouping is not None:
        groups = DIGIT_GROUPINGS[grouping]
        group_of = torch.empty(10, dtype=torch.int64)
        for group, digits in enumerate(groups):
            group_of[list(digits)] = group
        y, classes = group_of[y], len(groups)
    return TaskData(grouping or "digits", "classification", "image", Split(x[train_idx], y[train_idx]),
                    Split(x[test_idx], y[test_idx]), num_outputs=classes)


def load_diabetes() -> TaskData:
    """sklearn diabetes: 442 patients, 10 features, one target (disease progression); x (N, 10), y (N, 1).
    Evaluated by k-fold cross-validation (no fixed test split)."""
    from sklearn.datasets import load_diabetes as sk_diabetes

    bunch = sk_diabetes()
    x = torch.tensor(bunch.data, dtype=torch.float32)
    y = torch.tensor(bunch.target, dtype=torch.float32)[:, None]
    return TaskData("diabetes", "regression", "tabular", Split(x, y), None, num_outputs=1)


def load_spirals(n_per_class: int = 500) -> TaskData:
    """Two-spirals toy: train and test drawn with different seeds; x (N, 2) float32, y (N,) in {0, 1}."""
    return TaskData("spirals", "classification", "tabular", Split(*make_spirals(n_per_class, seed=0)),
                    Split(*make_spirals(n_per_class, seed=1000)), num_outputs=2)
