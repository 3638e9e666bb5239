"""Low-precision inputs on the fused backends against float64 on the same rounded inputs, per dtype and gamma.

The fused backends compute in float32 (accumulators, per-entry math, everything the backward rebuilds from the
forward), so their error must not grow with gamma faster than that of the literal reference computing in the
input dtype. The keys cluster around the queries, so that a large gamma still spreads each query's attention.
On the GPU, `triton` takes bf16 / fp16 dot operands; in the CPU interpreter bf16 operands go as float32
(mn_kernels: the interpreter's bf16 dot is wrong), so the `gpu` run is the one that prices bf16 dots.
"""
import pytest
import torch

import mn

from helpers import (
    LOW_PRECISION,
    TF32,
    cotangents,
    low_precision_tol,
    make_inputs,
    matmul_precision,
    outputs_and_grads,
    scaled_error,
)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BACKENDS = [b for b in ("native", "triton") if mn.available_backends(DEVICE)[b] is None]
GAMMAS = (5.0, 100.0, 1000.0)

# The dtypes in which the fused backends must also be no worse than autograd computing in that dtype.
LOW = (torch.bfloat16, torch.float16)


def _problem(B, S, C, n, seed):
    """make_inputs' operands with keys clustered around the queries' directions (cosines within ~1e-3 of each
    other inside a cluster), so that at gamma = 1000 a query still spreads its attention over its cluster."""
    z, keys, values, weight, tau = make_inputs(B, S, C, n, seed=seed)
    g = torch.Generator().manual_seed(seed + 100)
    centres = torch.nn.functional.normalize(z, dim=1)[torch.arange(S) % B]
    keys = centres + 0.03 / n ** 0.5 * torch.randn(S, n, generator=g, dtype=torch.float64)
    return [t.to(DEVICE) for t in (z, keys, values, weight, tau)]


def _max_error(backend, dtype, gamma, shape):
    """The largest scaled error over grad, inner_loss and the five input gradients, and over three seeds."""
    worst = 0.0
    for seed in (5, 6, 7):
        low = [t.to(dtype).requires_grad_() for t in _problem(*shape, seed)]
        exact = [t.detach().double().requires_grad_() for t in low]
        cot = cotangents(shape[0], shape[2], shape[3], device=DEVICE)
        ref = outputs_and_grads(exact, "autograd", cot, gamma=gamma)
        got = outputs_and_grads(low, backend, [c.to(dtype) for c in cot], gamma=gamma)
        assert all(a.dtype == dtype for a in got), backend
        worst = max(worst, *(scaled_error(a, b) for a, b in zip(got, ref)))
    return worst


@pytest.mark.parametrize("gamma", GAMMAS, ids=lambda g: f"gamma{g:g}")
@pytest.mark.parametrize("dtype", list(LOW_PRECISION), ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
def test_error_against_float64_within_table(backend, dtype, gamma):
    shape = (8, 300, 10, 32) if DEVICE == "cuda" else (3, 40, 5, 16)
    with matmul_precision("highest"):
        err = _max_error(backend, dtype, gamma, shape)
        # Against autograd in the low dtype from gamma = 100, where its error is 3.5x ours or more (measured);
        # at gamma = 5 the two are close (0.77 for Triton fp16) and autograd's depends on the CPU's bf16 / fp16
        # matmul (AVX-512 BF16, AMX or AVX2), so there the table alone bounds the error.
        literal = _max_error("autograd", dtype, gamma, shape) if dtype in LOW and gamma >= 100 else float("inf")
    tol = low_precision_tol(backend, dtype, gamma, DEVICE)
    assert tol is None or err < tol, f"{err:.2e} >= {tol:.0e}"
    assert err <= literal, f"{backend} {err:.2e} worse than autograd computing in {dtype}: {literal:.2e}"


@pytest.mark.gpu
@pytest.mark.parametrize("backend", BACKENDS)
def test_tf32_against_float64(backend):
    """float32 inputs with TF32 dots (matmul precision "high"), which only the GPU has."""
    with matmul_precision("high"):
        err = _max_error(backend, torch.float32, 5.0, (8, 300, 10, 32))
    assert err < TF32, f"{err:.2e} >= {TF32:.0e}"
