"""Image-folder data sets, read with Pillow: CINIC-10 and Tiny-ImageNet (downsampled to 32x32).

CINIC-10 (https://github.com/BayesWatch/cinic-10), as the archive extracts under the data directory:
  cinic-10/{train,valid,test}/<class>/*.png                                     (32x32 RGB)
Tiny-ImageNet (http://cs231n.stanford.edu/tiny-imagenet-200.zip):
  tiny-imagenet-200/wnids.txt, train/<wnid>/images/*.JPEG, val/val_annotations.txt, val/images/*.JPEG
  (64x64; the test labels are not public, so the official val set is the test set, as in the paper).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .base import DataFormatError, Split, TaskData, require

CINIC_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_EXTENSIONS = {".png", ".jpg", ".jpeg"}


def read_image(path: Path, size: int) -> np.ndarray:
    """One image file -> (3, size, size) uint8 RGB; resized with a box filter (area averaging) if needed."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as e:   # pillow is a dependency of mn; this guards a broken install
        raise ImportError("reading image folders needs Pillow: pip install pillow") from e
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if img.size != (size, size):
                img = img.resize((size, size), Image.Resampling.BOX)
            return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DataFormatError(f"{path} is not a readable image ({e})") from e


def _images(paths: list[Path], size: int) -> torch.Tensor:
    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)
    for i, p in enumerate(paths):
        out[i] = read_image(p, size)
    return torch.from_numpy(out)


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in _EXTENSIONS)


def _class_folders(split_dir: Path, classes: tuple[str, ...], dataset: str, how: str) -> Split:
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = _files(require(split_dir / name, dataset, how))
        if not files:
            raise DataFormatError(f"{split_dir / name} holds no .png/.jpg images")
        paths += files
        labels += [label] * len(files)
    return Split(_images(paths, 32), torch.tensor(labels, dtype=torch.int64))


def load_cinic10(root: Path) -> TaskData:
    folder = Path(root) / "cinic-10"
    how = ("Download CINIC-10.tar.gz from https://datashare.ed.ac.uk/handle/10283/3192 and extract it into "
           f"{folder}")
    train, val, test = (_class_folders(require(folder / s, "CINIC-10", how), CINIC_CLASSES, "CINIC-10", how)
                        for s in ("train", "valid", "test"))
    return TaskData("cinic10", "classification", "image", train, test, num_outputs=10, val=val, augment=True,
                    class_names=CINIC_CLASSES)


def load_tiny_imagenet(root: Path) -> TaskData:
    """Tiny-ImageNet, 200 classes, every image box-downsampled from 64x64 to 32x32 (paper §Experiments)."""
    folder = Path(root) / "tiny-imagenet-200"
    how = "Download tiny-imagenet-200.zip from http://cs231n.stanford.edu/tiny-imagenet-200.zip and unzip it"
    wnids_file = require(folder / "wnids.txt", "Tiny-ImageNet", how)
    wnids = tuple(line.strip() for line in wnids_file.read_text().splitlines() if line.strip())
    if not wnids:
        raise DataFormatError(f"{wnids_file} lists no class ids")
    index = {w: i for i, w in enumerate(wnids)}
    paths, labels = [], []
    for w in wnids:
        files = _files(require(folder / "train" / w / "images", "Tiny-ImageNet", how))
        paths += files
        labels += [index[w]] * len(files)
    train = Split(_images(paths, 32), torch.tensor(labels, dtype=torch.int64))
    annotations = require(folder / "val" / "val_annotations.txt", "Tiny-ImageNet", how)
    paths, labels = [], []
    for n, line in enumerate(annotations.read_text().splitlines(), 1):
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in index:
            raise DataFormatError(f"{annotations} line {n}: expected '<file>\\t<wnid>...' with a wnid from "
                                  f"wnids.txt, got {line!r}")
        paths.append(require(folder / "val" / "images" / fields[0], "Tiny-ImageNet", how))
        labels.append(index[fields[1]])
    test = Split(_images(paths, 32), torch.tensor(labels, dtype=torch.int64))
    return TaskData("tiny_imagenet", "classification", "image", train, test, num_outputs=len(wnids), augment=True,
                    class_names=wnids)
