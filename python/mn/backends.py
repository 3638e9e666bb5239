"""Backend registry: which implementation of `inner_gradient` runs for given tensors.

    autograd  paper-literal reference (B x S x C logits, create_graph); ground truth for small sizes
    torch     closed-form reference, chunked over the dictionary; any size, any device
    triton    fused Triton kernels with a hand-written backward (CUDA; CPU only under TRITON_INTERPRET=1)
    native    C++/OpenMP and CUDA kernels of the extension mn._C (csrc/) with a hand-written backward (CPU, CUDA)
    auto      the best available for the tensors' device (see AUTO_ORDER); `resolve_backend` says which

A backend is an implementation of `fn(z, keys, values, weight, tau, *, gamma, entry_dropout, seed)
-> (grad, inner_loss)` plus a check that says why it cannot run on a device (None when it can) and,
optionally, one that says why it cannot take n features of a dtype (`auto` then takes the next in its order).
`later_step` is its implementation of inner steps 2..T, the same op at per-example weights (B, C, n); None: those
steps run on the `torch` reference.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import native_ops, triton_ops
from .reference import inner_gradient_autograd, inner_gradient_torch


@dataclass(frozen=True)
class Backend:
    name: str
    inner_gradient: Callable
    unavailable: Callable[[torch.device], str | None]   # the reason it cannot run there, or None
    later_step: Callable | None
    rejects: Callable[[int, torch.dtype], str | None] = lambda n, dtype: None   # n features it cannot take
    later_rejects: Callable[[torch.device, int, torch.dtype], str | None] = lambda device, n, dtype: None
    # ^ why its later steps cannot run there (they then run on `torch`), or None


def _always(device: torch.device) -> str | None:
    return None


BACKENDS: dict[str, Backend] = {
    "autograd": Backend("autograd", inner_gradient_autograd, _always, later_step=inner_gradient_autograd),
    "torch": Backend("torch", inner_gradient_torch, _always, later_step=inner_gradient_torch),
    "triton": Backend("triton", triton_ops.inner_gradient_triton, triton_ops.unavailable,
                      later_step=triton_ops.later_step_triton, later_rejects=triton_ops.later_rejects,
                      rejects=triton_ops.rejects),
    "native": Backend("native", native_ops.inner_gradient_native, native_ops.unavailable,
                      later_step=native_ops.later_step_native, later_rejects=native_ops.later_rejects),
}

# Preference of `auto`, fastest first, per device type (measured: bench/results/). On CPU the Triton
# interpreter is for verification only, never a choice of `auto`; `native` beats `torch` there on every
# measured config (bench/results/cpu-native.md). On CUDA `native` is the independent cross-check of `triton`,
# not tuned for speed, so `auto` does not pick it.
AUTO_ORDER: dict[str, tuple[str, ...]] = {"cuda": ("triton", "torch"), "cpu": ("native", "torch")}


def register_backend(backend: Backend, *, prefer_on: tuple[str, ...] = ()) -> None:
    """Adds a backend; `prefer_on` device types put it first in `auto`'s order there."""
    BACKENDS[backend.name] = backend
    for device_type in prefer_on:
        AUTO_ORDER[device_type] = (backend.name,) + tuple(
            b for b in AUTO_ORDER.get(device_type, ("torch",)) if b != backend.name)


def available_backends(device: str | torch.device = "cpu") -> dict[str, str | None]:
    """Every backend name -> None if it can run on `device`, else the reason why not."""
    device = torch.device(device)
    return {name: b.unavailable(device) for name, b in BACKENDS.items()}


def resolve_backend(name: str, device: str | torch.device = "cpu", n: int | None = None,
                    dtype: torch.dtype = torch.float32) -> str:
    """The backend that `name` ("auto" or a backend name) runs on `device`, for inputs with n features of `dtype`
    when n is given; raises if it cannot. "auto" skips a backend that cannot take those features."""
    device = torch.device(device)
    status = available_backends(device)
    takes = (lambda b: True) if n is None else (lambda b: BACKENDS[b].rejects(n, dtype) is None)
    if name == "auto":
        return next(b for b in AUTO_ORDER.get(device.type, ("torch",)) if status.get(b) is None and takes(b))
    if name not in BACKENDS or status[name] is not None:
        usable = ", ".join(["auto"] + [b for b, why in status.items() if why is None])
        lacking = "; ".join(f"{b}: {why}" for b, why in status.items() if why is not None)
        what = "is unknown" if name not in BACKENDS else f"cannot run on {device} ({status[name]})"
        raise ValueError(f"backend={name!r} {what}. Available on {device.type}: {usable}"
                         + (f". Unavailable: {lacking}" if lacking else ""))
    if not takes(name):
        raise ValueError(f"backend={name!r} cannot take z with n = {n} features "
                         f"({BACKENDS[name].rejects(n, dtype)}); backend='torch' takes any n")
    return name


def check_backend_name(name: str) -> None:
    """Raises unless `name` is "auto" or a registered backend (device-independent; for constructors)."""
    if name != "auto" and name not in BACKENDS:
        raise ValueError(f"backend={name!r} is unknown; known: auto, {', '.join(BACKENDS)}")


def get_backend(name: str, device, n: int, dtype: torch.dtype) -> Backend:
    return BACKENDS[resolve_backend(name, device, n, dtype)]
