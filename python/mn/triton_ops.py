"""Backend "triton": the fused kernels of `mn_kernels.inner_gradient` (step 1) and `mn_kernels.later_step` (steps
2..T) as the custom-op pairs `mn::triton_inner_gradient_fwd/_bwd` and `mn::triton_later_step_fwd/_bwd`
(fused_ops.py), with their hand-written backward.

Layers, as in Liger-Kernel: `mn_kernels` (kernels + launchers, tensors in and out) <- this file (availability,
the op pair) <- `mn.inner_gradient(backend="triton")` <- the layers.

The kernels are imported on first use: triton reads TRITON_INTERPRET when a kernel is defined, so tests on
CPU set it before that import.
"""
from __future__ import annotations

import functools
import importlib.util
import os

import torch

from .fused_ops import register_fused_op


@functools.cache
def _kernels():
    import mn_kernels.inner_gradient as kernels
    return kernels


@functools.cache
def _later_kernels():
    import mn_kernels.later_step as kernels
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
    from mn_kernels.inner_gradient import max_features  # a plain import: torch.compile traces this check
    limit = max_features(dtype)
    return None if n <= limit else f"the Triton kernels take n <= {limit} with {dtype} inputs"


def later_rejects(device: torch.device, n: int, dtype: torch.dtype) -> str | None:
    """Why the later-step kernels cannot take n features of `dtype`, or None (steps 2..T then run on `torch`)."""
    from mn_kernels.later_step import max_features
    limit = max_features(dtype)
    return None if n <= limit else f"the later-step kernels take n <= {limit} with {dtype} inputs"


def _forward(*args):
    return _kernels().inner_gradient_fwd(*args)


def _backward(*args):
    return _kernels().inner_gradient_bwd(*args)


def _fake_prepared(z, keys, values, weight, tau, gamma, entry_dropout, seed):
    return _kernels().launch.Setup(z, keys, values, weight, tau, gamma, entry_dropout, seed, launch=False).saved()


inner_gradient_triton = register_fused_op("triton", _forward, _backward, _fake_prepared)


def _later_forward(*args):
    return _later_kernels().later_step_fwd(*args)


def _later_backward(*args):
    return _later_kernels().later_step_bwd(*args)


def _later_fake_prepared(z, keys, values, phi, tau, gamma, entry_dropout, seed):
    return _later_kernels().launch.LaterSetup(z, keys, values, phi, tau, gamma, entry_dropout, seed,
                                              launch=False).saved()


later_step_triton = register_fused_op("triton", _later_forward, _later_backward, _later_fake_prepared,
                                      op="later_step")
