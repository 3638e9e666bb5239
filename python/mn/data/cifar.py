"""CIFAR-10 and CIFAR-100 from the official python pickles (https://www.cs.toronto.edu/~kriz/cifar.html).

Layout under the data directory, as the archives extract:
  cifar-10-batches-py/data_batch_1 .. data_batch_5, test_batch        (keys b"data", b"labels")
  cifar-100-python/train, test                                         (keys b"data", b"fine_labels", b"coarse_labels")
b"data" is (N, 3072) uint8, rows are 3 x 32 x 32 channel-major; labels are checked against the class count.
The pickles are read by an unpickler that only builds numpy arrays, so a tampered file cannot run code. Both the
official (Python 2) pickles and ones re-saved by Python 3 with protocol 2 load: the latter rebuild bytes with
_codecs.encode(text, "latin1"), which is allowed in exactly that form.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from .base import DataFormatError, Split, TaskData, require

_HOW = "Download {archive} from https://www.cs.toronto.edu/~kriz/cifar.html and extract it into the data directory"


def _latin1_bytes(*args):
    """The one use of _codecs.encode a pickle may make: _codecs.encode(text, "latin1") -> bytes, which is how
    Python 3 writes bytes in protocol 2. Any other codec or argument is refused (codecs reach much further)."""
    if len(args) != 2 or not isinstance(args[0], str) or args[1] not in ("latin1", "latin-1"):
        shown = ", ".join(repr(a)[:40] for a in args)
        raise pickle.UnpicklingError(f"refusing _codecs.encode({shown}): only (text, 'latin1') is part of a "
                                     f"CIFAR pickle")
    return args[0].encode("latin1")


class _ArrayUnpickler(pickle.Unpickler):
    """Allows only what numpy arrays need to unpickle (old and new numpy module paths), and _codecs.encode
    only as _latin1_bytes."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("numpy._core.numeric", "_frombuffer"),
                ("numpy.core.numeric", "_frombuffer")}

    def find_class(self, module, name):
        if (module, name) == ("_codecs", "encode"):
            return _latin1_bytes
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of a CIFAR pickle")
        module = module.replace("numpy.core.", "numpy._core.")
        return super().find_class(module, name)


def read_batch(path: Path, label_keys: tuple[str, ...],
               classes: tuple[int, ...] | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
    """One pickle -> images (N, 3, 32, 32) uint8 and one label array per key; with `classes` (one count per
    key), DataFormatError naming the file and the first label outside 0..count-1 (it would otherwise index
    past the classifier, or train on a class that does not exist)."""
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = [np.asarray(batch[key.encode()], dtype=np.int64) for key in label_keys]
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise DataFormatError(f"{path} is not a CIFAR python pickle ({type(e).__name__}: {e})") from e
    if data.ndim != 2 or data.shape[1] != 3072 or any(len(l) != len(data) for l in labels):
        raise DataFormatError(f"{path}: expected b'data' of shape (N, 3072) and one label per row, got data "
                              f"{data.shape} and {[len(l) for l in labels]} labels")
    for key, values, count in zip(label_keys, labels, classes or ()):
        bad = np.flatnonzero((values < 0) | (values >= count))
        if len(bad):
            raise DataFormatError(f"{path}: label {values[bad[0]]} (row {bad[0]} of b'{key}') is outside "
                                  f"0..{count - 1}; the file is damaged or not from this data set")
    return data.reshape(-1, 3, 32, 32), labels


def _stack(paths, label_keys, label_index, classes):
    parts = [read_batch(p, label_keys, classes) for p in paths]
    x = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    y = torch.from_numpy(np.concatenate([p[1][label_index] for p in parts]))
    return Split(x, y)


def load_cifar10(root: Path) -> TaskData:
    folder = Path(root) / "cifar-10-batches-py"
    how = _HOW.format(archive="cifar-10-python.tar.gz")
    train = [require(folder / f"data_batch_{i}", "CIFAR-10", how) for i in range(1, 6)]
    test = [require(folder / "test_batch", "CIFAR-10", how)]
    splits = [_stack(p, ("labels",), 0, (10,)) for p in (train, test)]
    return TaskData("cifar10", "classification", "image", *splits, num_outputs=10, augment=True)


def load_cifar100(root: Path, *, coarse: bool = False) -> TaskData:
    """CIFAR-100 with its 100 fine labels, or (coarse=True) its 20 coarse superclass labels."""
    folder = Path(root) / "cifar-100-python"
    how = _HOW.format(archive="cifar-100-python.tar.gz")
    paths = [[require(folder / name, "CIFAR-100", how)] for name in ("train", "test")]
    splits = [_stack(p, ("fine_labels", "coarse_labels"), int(coarse), (100, 20)) for p in paths]
    name = "cifar100_coarse" if coarse else "cifar100"
    return TaskData(name, "classification", "image", *splits, num_outputs=20 if coarse else 100, augment=True)
