"""Low-precision inputs on the fused backends against float64 on the same rounded inputs, per dtype and gamma.

The fused backends compute in float32 (accumulators, per-entry math, everything the backward rebuilds from the
forward), so their error must not grow with gamma faster than that of the literal reference computing in the
input dtype. On the GPU, `triton` takes bf16 / fp16 dot operands; in the CPU interpreter bf16 operands go as
float32 (mn_kernels: the interpreter's bf16 dot is wrong), so the `gpu` run is the one that prices bf16 dots.
"""
import pytest
import torch

import mn

from helpers import LOW_PRECISION, TF32, cotangents, make_inputs, matmul_precision, outputs_and_grads, scaled_error

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BACKENDS = [b for b in ("native", "triton") if mn.available_backends(DEVICE)[b] is None]
GAMMAS = (5.0, 100.0, 1000.0)

# The dtypes in which the fused backends must also be no worse than autograd computing in that dtype.
LOW = (torch.bfloat16, torch.float16)


def _max_error(backend, dtype, gamma, shape, **kw):
    low = [t.to(dtype).requires_grad_() for t in make_inputs(*shape, seed=5, device=DEVICE)]
    exact = [t.detach().double().requires_grad_() for t in low]
    cot = cotangents(shape[0], shape[2], shape[3], device=DEVICE)
    ref = outputs_and_grads(exact, "autograd", cot, gamma=gamma, **kw)
    got = outputs_and_grads(low, backend, [c.to(dtype) for c in cot], gamma=gamma, **kw)
    assert all(a.dtype == dtype for a in got), backend
    return max(scaled_error(a, b) for a, b in zip(got, ref))


@pytest.mark.parametrize("gamma", GAMMAS, ids=lambda g: f"gamma{g:g}")
@pytest.mark.parametrize("dtype", list(LOW_PRECISION), ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
def test_error_against_float64_within_table(backend, dtype, gamma):
    shape = (8, 300, 10, 32) if DEVICE == "cuda" else (3, 40, 5, 16)
    with matmul_precision("highest"):
        # No dropout: a query left with one dominant entry has dz ~ 0 exactly, and every closed-form backend
        # (`torch` too) then returns rounding of the D_i identity, unbounded relative to that zero.
        err = _max_error(backend, dtype, gamma, shape)
        literal = _max_error("autograd", dtype, gamma, shape) if dtype in LOW else float("inf")
    assert err < LOW_PRECISION[dtype][gamma], f"{err:.2e} >= {LOW_PRECISION[dtype][gamma]:.0e}"
    assert err <= literal, f"{backend} {err:.2e} worse than autograd computing in {dtype}: {literal:.2e}"


@pytest.mark.gpu
@pytest.mark.parametrize("backend", BACKENDS)
def test_tf32_against_float64(backend):
    """float32 inputs with TF32 dots (matmul precision "high"), which only the GPU has."""
    with matmul_precision("high"):
        err = _max_error(backend, torch.float32, 5.0, (8, 300, 10, 32))
    assert err < TF32, f"{err:.2e} >= {TF32:.0e}"
