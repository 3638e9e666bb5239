"""Grad and autocast modes the ops set for themselves: autograd inside no_grad / inference_mode, for the code
that differentiates the inner loss to compute its forward (the literal reference, the generic layer's torch.func
path), and autocast off, for the code that must compute in its operands' dtypes (docs/design.md, "Dtypes")."""
from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def autograd_enabled():
    """Autograd on, even inside torch.no_grad() or torch.inference_mode()."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def usable(x: torch.Tensor) -> torch.Tensor:
    """x, or a normal-tensor copy of it if it was created in inference mode (autograd refuses those)."""
    return x.clone() if x.is_inference() else x


def without_autocast(device: torch.device):
    """Autocast off on `device` (nothing to turn off where autocast does not exist, e.g. meta)."""
    return torch.autocast(device.type, enabled=False) if device.type in ("cpu", "cuda") else contextlib.nullcontext()
