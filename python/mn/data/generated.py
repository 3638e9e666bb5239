"""Generated tabular classification sets (always available, nothing read or downloaded), for the paper's claims
on data that ships (issue 16):

  mixture           sklearn make_classification: 10 classes, 4 Gaussian clusters per class on the vertices of a
                    10-d hypercube (class_sep 1.5), 4 redundant and 6 noise dimensions (20 in all): hard enough
                    that a small MLP leaves room (bench/results/paper-claims.md has what it reaches).
  hierarchy         32 fine classes in 8 coarse classes of 4 (Fig. 6's induction analysis): each coarse class is
  hierarchy_coarse  a Gaussian cluster made of 4 fine sub-clusters at distinct locations around its centre (fine
                    classes lie apart inside a coarse class), in 8 signal dimensions, plus 32 dimensions of pure
                    noise; "hierarchy" is labelled by the fine class, "hierarchy_coarse" by the coarse one
                    (coarse = fine // 4), same examples in the same order.

Both: 8000 examples, a fixed split stratified by the (fine) class: 5000 train / 1000 validation / 2000 test; x
(N, d) float32, y (N,) int64. The seeds are fixed, so every call returns the same tensors.
"""
from __future__ import annotations

import numpy as np
import torch

from .base import Split, TaskData

SPLIT_SIZES = (5000, 1000, 2000)          # train, validation, test
MIXTURE_CLASSES = 10
HIERARCHY_COARSE, HIERARCHY_FINE_PER_COARSE = 8, 4
HIERARCHY_SIGNAL_DIMS, HIERARCHY_NOISE_DIMS = 8, 32


def stratified_split_by_count(y: np.ndarray, sizes: tuple[int, int, int], seed: int) -> tuple[np.ndarray, ...]:
    """Index arrays (train, val, test) of exactly `sizes` examples (counts), each stratified by y, from a fixed seed."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(y))
    train_val, test = train_test_split(index, test_size=sizes[2], random_state=seed, stratify=y)
    train, val = train_test_split(train_val, test_size=sizes[1], random_state=seed + 1, stratify=y[train_val])
    return train, val, test


def _task(name: str, x: np.ndarray, y: np.ndarray, classes: int, parts) -> TaskData:
    x, y = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.int64)
    train, val, test = (Split(x[torch.as_tensor(i)], y[torch.as_tensor(i)]) for i in parts)
    return TaskData(name, "classification", "tabular", train, test, num_outputs=classes, val=val)


def load_mixture() -> TaskData:
    """The mixture set (module docstring): x (N, 20), 10 classes."""
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=sum(SPLIT_SIZES), n_features=20, n_informative=10, n_redundant=4,
                               n_classes=MIXTURE_CLASSES, n_clusters_per_class=4, class_sep=1.5, flip_y=0.0,
                               random_state=0)
    return _task("mixture", x, y, MIXTURE_CLASSES, stratified_split_by_count(y, SPLIT_SIZES, seed=0))


def make_hierarchy(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x (N, 40), fine labels (N,), fine centres (32, 8)). Coarse centres c_k ~ N(0, 4^2 I), fine centres
    c_k + N(0, 1.2^2 I), points at their fine centre + N(0, 0.8^2 I) in the 8 signal dimensions, N(0, 1) in
    the 32 noise dimensions; 250 points per fine class, shuffled. Fine class f belongs to coarse class f // 4.
    The coarse spread is over 3x the fine one so that a coarse class is one cluster: every fine centre's nearest
    other centre is in its own coarse class (with equal spreads, under half of them were)."""
    g = np.random.default_rng(seed)
    fine_classes = HIERARCHY_COARSE * HIERARCHY_FINE_PER_COARSE
    coarse_centres = g.normal(0.0, 4.0, (HIERARCHY_COARSE, HIERARCHY_SIGNAL_DIMS))
    offsets = g.normal(0.0, 1.2, (HIERARCHY_COARSE, HIERARCHY_FINE_PER_COARSE, HIERARCHY_SIGNAL_DIMS))
    centres = (coarse_centres[:, None] + offsets).reshape(fine_classes, HIERARCHY_SIGNAL_DIMS)
    fine = np.repeat(np.arange(fine_classes), sum(SPLIT_SIZES) // fine_classes)
    signal = centres[fine] + g.normal(0.0, 0.8, (len(fine), HIERARCHY_SIGNAL_DIMS))
    x = np.concatenate([signal, g.normal(0.0, 1.0, (len(fine), HIERARCHY_NOISE_DIMS))], axis=1)
    order = g.permutation(len(fine))
    return x[order], fine[order], centres


def load_hierarchy(*, coarse: bool = False) -> TaskData:
    """The hierarchy set (module docstring): x (N, 40), 32 fine classes, or with coarse=True
    ("hierarchy_coarse") the same examples and splits labelled by their 8 coarse classes."""
    x, fine, _ = make_hierarchy()
    parts = stratified_split_by_count(fine, SPLIT_SIZES, seed=0)
    if coarse:
        return _task("hierarchy_coarse", x, fine // HIERARCHY_FINE_PER_COARSE, HIERARCHY_COARSE, parts)
    return _task("hierarchy", x, fine, HIERARCHY_COARSE * HIERARCHY_FINE_PER_COARSE, parts)
