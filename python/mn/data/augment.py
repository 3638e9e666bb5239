"""Training-time image augmentation as in the paper's code: random crop and flip, AutoAugment, Cutout.

The authors' TensorFlow code (lupalab/Meta-Neighborhoods, `data_generator.py`, `preprocess_image`) augments
each training image, stored as uint8, in this order:

1. zero-pad by 4 pixels, random crop back to the original size, random left-right flip;
2. AutoAugment with the CIFAR-10 policy (Cubuk et al., *AutoAugment: Learning Augmentation Strategies from
   Data*, CVPR 2019): one of 25 sub-policies drawn uniformly, each two (op, probability, magnitude level)
   pairs applied in turn, each with its probability; the table, the 14 PIL ops and their magnitude ranges
   are those of their `autoaugment.py` (`CIFAR10Policy`, `SubPolicy`);
3. Cutout (DeVries & Taylor 2017): one 16 x 16 square, its centre uniform over the image, clipped at the
   borders, set to pixel value 0 (black) in the uint8 image;
4. then scaling (theirs: x / 255; ours: per-channel mean and std, `Prepared.inputs`).

`augment_batch` runs 1-3 on a (B, C, H, W) uint8 batch, C = 1 (PIL mode "L") or 3 ("RGB"). Steps 1 and 3 are
vectorised over the batch; only the AutoAugment ops go through PIL, image by image, and only for images where
an op fires. Unlike theirs (Python's `random` and numpy's global generator), every random number is drawn from
the torch.Generator passed in, a fixed count per batch, so a run resumed at an epoch replays the same
augmentation (see mn/training/loop.py). docs/design.md, "Image augmentation".

Where their ops differ from Cubuk et al.'s, we follow theirs: rotation is always counter-clockwise (no random
sign; theirs has the signed line commented out), translation reaches 150/331 of the image side, magnitudes
follow their ranges (e.g. posterize keeps 8..4 bits, enhancement factors 1 +- 0.0..0.9), and the fill of the
geometric ops is grey 128.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps

PAD = 4            # crop padding, pixels per side
CUTOUT = 16        # side of the Cutout square
FILL = 128         # grey fill of the geometric ops where the image has no source pixel
LEVELS = 10        # magnitude levels 0..9

# Cubuk et al. 2019, the policy learned on reduced CIFAR-10, in the order of their autoaugment.py's
# CIFAR10Policy: each sub-policy is two (op, probability, magnitude level) triples.
CIFAR10_POLICY: tuple[tuple[tuple[str, float, int], tuple[str, float, int]], ...] = (
    (("invert", 0.1, 7), ("contrast", 0.2, 6)),
    (("rotate", 0.7, 2), ("translateX", 0.3, 9)),
    (("sharpness", 0.8, 1), ("sharpness", 0.9, 3)),
    (("shearY", 0.5, 8), ("translateY", 0.7, 9)),
    (("autocontrast", 0.5, 8), ("equalize", 0.9, 2)),
    (("shearY", 0.2, 7), ("posterize", 0.3, 7)),
    (("color", 0.4, 3), ("brightness", 0.6, 7)),
    (("sharpness", 0.3, 9), ("brightness", 0.7, 9)),
    (("equalize", 0.6, 5), ("equalize", 0.5, 1)),
    (("contrast", 0.6, 7), ("sharpness", 0.6, 5)),
    (("color", 0.7, 7), ("translateX", 0.5, 8)),
    (("equalize", 0.3, 7), ("autocontrast", 0.4, 8)),
    (("translateY", 0.4, 3), ("sharpness", 0.2, 6)),
    (("brightness", 0.9, 6), ("color", 0.2, 8)),
    (("solarize", 0.5, 2), ("invert", 0.0, 3)),
    (("equalize", 0.2, 0), ("autocontrast", 0.6, 0)),
    (("equalize", 0.2, 8), ("equalize", 0.8, 4)),
    (("color", 0.9, 9), ("equalize", 0.6, 6)),
    (("autocontrast", 0.8, 4), ("solarize", 0.2, 8)),
    (("brightness", 0.1, 3), ("color", 0.7, 0)),
    (("solarize", 0.4, 5), ("autocontrast", 0.9, 3)),
    (("translateY", 0.9, 9), ("translateY", 0.7, 9)),
    (("autocontrast", 0.9, 2), ("solarize", 0.8, 3)),
    (("equalize", 0.8, 8), ("invert", 0.1, 3)),
    (("translateY", 0.7, 9), ("autocontrast", 0.9, 1)),
)


def _linear(start: float, stop: float) -> Callable[[int], float]:
    """Level 0..9 -> the level-th of 10 evenly spaced values from start to stop (numpy.linspace's grid)."""
    return lambda level: start + (stop - start) * level / (LEVELS - 1)


# Magnitude of each op at a level, as their SubPolicy's `ranges` (translations as a fraction of the side).
_MAGNITUDE: dict[str, Callable[[int], float]] = {
    "shearX": _linear(0.0, 0.3), "shearY": _linear(0.0, 0.3),
    "translateX": _linear(0.0, 150 / 331), "translateY": _linear(0.0, 150 / 331),
    "rotate": _linear(0.0, 30.0),
    "color": _linear(0.0, 0.9), "contrast": _linear(0.0, 0.9), "sharpness": _linear(0.0, 0.9),
    "brightness": _linear(0.0, 0.9),
    "posterize": lambda level: int(round(_linear(8.0, 4.0)(level))),
    "solarize": _linear(256.0, 0.0),
    "autocontrast": lambda level: 0.0, "equalize": lambda level: 0.0, "invert": lambda level: 0.0,
}
# Ops whose magnitude gets a random sign when applied (theirs: `random.choice([-1, 1])`); not rotate.
SIGNED = frozenset({"shearX", "shearY", "translateX", "translateY", "color", "contrast", "sharpness", "brightness"})


def magnitude(op: str, level: int) -> float:
    """The unsigned magnitude of `op` at `level` (0..9): degrees for rotate, a shear factor, a fraction of the
    side for translations, bits kept for posterize, the threshold for solarize, the enhancement offset."""
    if op not in _MAGNITUDE:
        raise ValueError(f"op must be one of {', '.join(_MAGNITUDE)}, got {op!r}")
    if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level < LEVELS:
        raise ValueError(f"level must be an integer in [0, {LEVELS - 1}], got {level!r}")
    return _MAGNITUDE[op](level)


def _fill(img: Image.Image) -> int | tuple[int, ...]:
    return FILL if img.mode == "L" else (FILL,) * len(img.getbands())


def _affine(img: Image.Image, coeffs: tuple[float, ...], resample: Image.Resampling) -> Image.Image:
    # PIL's affine map takes each output pixel (x, y) from input (a x + b y + c, d x + e y + f).
    return img.transform(img.size, Image.Transform.AFFINE, coeffs, resample=resample, fillcolor=_fill(img))


# Each op: (PIL image, signed magnitude) -> PIL image. Shears resample bicubically, translations and rotation
# take the nearest pixel, as theirs (PIL's defaults); enhancement factors are 1 + magnitude.
OPS: dict[str, Callable[[Image.Image, float], Image.Image]] = {
    "shearX": lambda img, m: _affine(img, (1, m, 0, 0, 1, 0), Image.Resampling.BICUBIC),
    "shearY": lambda img, m: _affine(img, (1, 0, 0, m, 1, 0), Image.Resampling.BICUBIC),
    "translateX": lambda img, m: _affine(img, (1, 0, m * img.size[0], 0, 1, 0), Image.Resampling.NEAREST),
    "translateY": lambda img, m: _affine(img, (1, 0, 0, 0, 1, m * img.size[1]), Image.Resampling.NEAREST),
    # Theirs rotates an RGBA copy and composites it on grey; with nearest sampling the alpha is 0 or 255, so
    # that equals rotating with a grey fill.
    "rotate": lambda img, m: img.rotate(m, resample=Image.Resampling.NEAREST, fillcolor=_fill(img)),
    "color": lambda img, m: ImageEnhance.Color(img).enhance(1 + m),
    "contrast": lambda img, m: ImageEnhance.Contrast(img).enhance(1 + m),
    "sharpness": lambda img, m: ImageEnhance.Sharpness(img).enhance(1 + m),
    "brightness": lambda img, m: ImageEnhance.Brightness(img).enhance(1 + m),
    "posterize": lambda img, m: ImageOps.posterize(img, int(m)),
    "solarize": lambda img, m: ImageOps.solarize(img, m),
    "autocontrast": lambda img, m: ImageOps.autocontrast(img),
    "equalize": lambda img, m: ImageOps.equalize(img),
    "invert": lambda img, m: ImageOps.invert(img),
}


def _check_images(x, name: str = "x") -> None:
    """TypeError / ValueError naming `name` unless x is a (B, C, H, W) uint8 CPU tensor with C = 1 or 3."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype != torch.uint8:
        raise ValueError(f"{name} must be a uint8 image batch (AutoAugment's PIL ops work on 8-bit pixels), got "
                         f"{x.dtype}")
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"{name} must have shape (B, C, H, W) with C = 1 or 3, got {tuple(x.shape)}")
    if x.device.type != "cpu":
        raise ValueError(f"{name} must be on the CPU (the PIL ops run there), got {x.device}")


def _check_generator(generator) -> None:
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")


def _to_pil(image: np.ndarray) -> Image.Image:
    """(H, W, C) uint8 -> a PIL image, mode "L" for one channel, "RGB" for three."""
    return Image.fromarray(np.ascontiguousarray(image[:, :, 0] if image.shape[2] == 1 else image))


def _from_pil(img: Image.Image, channels: int) -> np.ndarray:
    out = np.asarray(img, dtype=np.uint8)
    return out[:, :, None] if channels == 1 else out


def apply_op(image: torch.Tensor, op: str, magnitude: float) -> torch.Tensor:
    """One AutoAugment op on one (C, H, W) uint8 image with a signed `magnitude` (see `magnitude`); the same
    shape and dtype back."""
    if op not in OPS:
        raise ValueError(f"op must be one of {', '.join(OPS)}, got {op!r}")
    if isinstance(image, torch.Tensor) and image.dim() != 3:
        raise ValueError(f"image must have shape (C, H, W), got {tuple(image.shape)}")
    _check_images(image[None] if isinstance(image, torch.Tensor) else image, "image")
    out = OPS[op](_to_pil(image.permute(1, 2, 0).numpy()), magnitude)
    return torch.from_numpy(_from_pil(out, image.shape[0]).copy()).permute(2, 0, 1).contiguous()


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int = PAD) -> torch.Tensor:
    """(B, C, H, W) of any dtype -> the same: each image zero-padded by `pad`, cropped at a random offset, and
    flipped left-right with probability 1/2 (the standard CIFAR augmentation), vectorised over the batch."""
    B, C, H, W = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad)).permute(0, 2, 3, 1)      # B, H+2p, W+2p, C
    dy = torch.randint(0, 2 * pad + 1, (B, 1, 1), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (B, 1, 1), generator=generator)
    cols = torch.arange(W).view(1, 1, W).expand(B, 1, W)
    flip = torch.rand(B, generator=generator) < 0.5
    cols = torch.where(flip.view(B, 1, 1), W - 1 - cols, cols)
    rows = torch.arange(H).view(1, H, 1)
    out = padded[torch.arange(B).view(B, 1, 1), rows + dy, cols + dx]                  # B, H, W, C
    return out.permute(0, 3, 1, 2).contiguous()


def auto_augment(x: torch.Tensor, generator: torch.Generator, policy=CIFAR10_POLICY) -> torch.Tensor:
    """(B, C, H, W) uint8 -> the same: per image, a sub-policy drawn uniformly from `policy`, each of its two
    ops applied with its probability, a signed op's sign drawn +-1 with probability 1/2. Draws 5 numbers per
    image from `generator` (sub-policy, two coins, two signs) whatever fires."""
    _check_images(x)
    _check_generator(generator)
    return _auto_augment(x, generator, policy)


def _auto_augment(x: torch.Tensor, generator: torch.Generator, policy=CIFAR10_POLICY) -> torch.Tensor:
    """`auto_augment` on arguments already checked (`augment_batch` checks its batch once)."""
    B, C = x.shape[:2]
    which = torch.randint(0, len(policy), (B,), generator=generator).tolist()
    coins = torch.rand(B, 2, generator=generator, dtype=torch.float64).tolist()
    signs = (torch.randint(0, 2, (B, 2), generator=generator) * 2 - 1).tolist()
    images = x.permute(0, 2, 3, 1).numpy()                                              # a view, B, H, W, C
    out = None
    for b in range(B):
        steps = [(op, magnitude(op, level) * (signs[b][k] if op in SIGNED else 1))
                 for k, (op, p, level) in enumerate(policy[which[b]]) if coins[b][k] < p]
        if not steps:
            continue
        img = _to_pil(images[b])
        for op, m in steps:
            img = OPS[op](img, m)
        if out is None:
            out = images.copy()
        out[b] = _from_pil(img, C)
    return x.clone() if out is None else torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def cutout(x: torch.Tensor, generator: torch.Generator, size: int = CUTOUT, fill: int = 0) -> torch.Tensor:
    """(B, C, H, W) -> the same with one size x size square per image set to `fill` in every channel: its
    centre (cy, cx) uniform over the pixels, rows [cy - size//2, cy + size//2) and likewise columns, clipped
    at the borders (theirs: pixel value 0 of the uint8 image). Vectorised; draws 2 numbers per image."""
    B, _, H, W = x.shape
    cy = torch.randint(0, H, (B, 1, 1), generator=generator)
    cx = torch.randint(0, W, (B, 1, 1), generator=generator)
    rows, cols = torch.arange(H).view(1, H, 1), torch.arange(W).view(1, 1, W)
    inside = ((rows >= cy - size // 2) & (rows < cy + size // 2)
              & (cols >= cx - size // 2) & (cols < cx + size // 2))                      # B, H, W
    return x.masked_fill(inside[:, None], fill)


def augment_batch(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The paper's training augmentation of a stored (B, C, H, W) uint8 batch, C = 1 or 3, in the authors'
    order: random crop (pad 4) and flip, AutoAugment's CIFAR-10 policy, Cutout (16 x 16, black); uint8 back.
    Every random number comes from `generator`, a fixed count per image (3 + 5 + 2)."""
    _check_images(x)
    _check_generator(generator)
    x = random_crop_flip(x, generator)
    x = _auto_augment(x, generator)
    return cutout(x, generator)
