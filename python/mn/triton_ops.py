"""Backend "triton": the fused kernels of `mn_kernels.inner_gradient` as a PyTorch op with a hand-written backward.

Layers, as in Liger-Kernel: `mn_kernels` (kernels + launchers, tensors in and out) <- this file (two
`torch.library` custom ops, `mn::inner_gradient_fwd` and `mn::inner_gradient_bwd`, with fake kernels for
tracing, and `register_autograd` joining them: the op's autograd Function) <- `mn.inner_gradient(backend=
"triton")` <- the layers. Because the ops are registered with fake kernels and their autograd, a
`torch.compile`d model keeps them in its graph as opaque calls (no graph break).

The kernels are imported on first use: triton reads TRITON_INTERPRET when a kernel is defined, so tests on
CPU set it before that import. The op takes the shared weight (C, n) only; inner steps 2..T (per-example
weights) run on the `torch` reference (see `mn.adapted_logits`).
"""
from __future__ import annotations

import functools
import importlib.util
import os

import torch
from torch import Tensor

from ._op_autograd import register_inner_gradient_autograd


@functools.cache
def _kernels():
    import mn_kernels.inner_gradient as kernels
    return kernels


# Looked up once: torch.compile cannot trace importlib (a graph break inside backend dispatch otherwise).
_HAS_TRITON = importlib.util.find_spec("triton") is not None


def unavailable(device: torch.device) -> str | None:
    """Why the Triton backend cannot run on `device`, or None if it can."""
    if not _HAS_TRITON:
        return "triton is not installed (pip install triton)"
    if device.type == "cuda":
        return None
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1":
        return None
    return f"needs a CUDA device (on {device.type} only under TRITON_INTERPRET=1, the slow interpreter)"


def rejects(n: int, dtype: torch.dtype) -> str | None:
    """Why the kernels cannot take n features of `dtype` (they hold whole rows in a tile), or None."""
    from mn_kernels.inner_gradient import max_features   # a plain import: torch.compile traces this check
    limit = max_features(dtype)
    return None if n <= limit else f"the Triton kernels take n <= {limit} with {dtype} inputs"


@torch.library.custom_op("mn::inner_gradient_fwd", mutates_args=())
def inner_gradient_fwd(z: Tensor, keys: Tensor, values: Tensor, weight: Tensor, tau: Tensor, gamma: float,
                       entry_dropout: float, seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor, list[Tensor]]:
    """-> grad (B, C, n), inner_loss (B,) in the compute dtype (float32, float64 for float64 inputs: the
    backward needs them unrounded), and for the backward lse (B,) (attention log-normaliser),
    a (B, C) (a_ic = wh_c . U_ic, the projection's coefficient) and the per-call preparation (row norms,
    per-entry delta and ce: `mn_kernels.inner_gradient._Setup.SAVED`)."""
    return _kernels().inner_gradient_fwd(z, keys, values, weight, tau, gamma, entry_dropout, seed)


@inner_gradient_fwd.register_fake
def _(z, keys, values, weight, tau, gamma, entry_dropout, seed):
    B, C, n = z.shape[0], weight.shape[0], weight.shape[1]
    acc = torch.float64 if z.dtype == torch.float64 else torch.float32
    saved = _kernels()._Setup(z, keys, values, weight, tau, gamma, entry_dropout, seed).saved()   # torch ops only
    return (z.new_empty(B, C, n, dtype=acc), z.new_empty(B, dtype=acc), z.new_empty(B, dtype=acc),
            z.new_empty(B, C, dtype=acc), saved)


@torch.library.custom_op("mn::inner_gradient_bwd", mutates_args=())
def inner_gradient_bwd(dgrad: Tensor, dloss: Tensor, z: Tensor, keys: Tensor, values: Tensor, weight: Tensor,
                       tau: Tensor, grad: Tensor, inner_loss: Tensor, lse: Tensor, a: Tensor, saved: list[Tensor],
                       gamma: float,
                       entry_dropout: float, seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """-> dz, dkeys, dvalues, dweight, dtau."""
    return _kernels().inner_gradient_bwd(dgrad, dloss, z, keys, values, weight, tau, grad, inner_loss, lse, a,
                                         saved, gamma, entry_dropout, seed)


@inner_gradient_bwd.register_fake
def _(dgrad, dloss, z, keys, values, weight, tau, grad, inner_loss, lse, a, saved, gamma, entry_dropout, seed):
    return tuple(torch.empty_like(t) for t in (z, keys, values, weight, tau))


register_inner_gradient_autograd(inner_gradient_fwd, inner_gradient_bwd, "triton")


def inner_gradient_triton(z, keys, values, weight, tau, *, gamma, entry_dropout=0.0, seed=0):
    """The backend entry point: (grad (B, C, n), inner_loss (B,)), differentiable through the fused backward."""
    grad, loss, *_ = torch.ops.mn.inner_gradient_fwd(z.contiguous(), keys.contiguous(), values.contiguous(),
                                                   weight.contiguous(), tau.reshape(()), float(gamma),
                                                   float(entry_dropout), int(seed))
    return grad.to(z.dtype), loss.to(z.dtype)
