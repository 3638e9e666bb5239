"""Low-precision inputs on the fused backends against float64 on the same rounded inputs, per dtype and gamma.

The fused backends compute in float32 (accumulators, per-entry math, everything the backward rebuilds from the
forward), so their error must not grow with gamma faster than that of the literal reference computing in the
input dtype. On the GPU, `triton` takes bf16 / fp16 dot operands; in the CPU interpreter bf16 operands go as
float32 (mn_kernels: the interpreter's bf16 dot is wrong), so the `gpu` run is the one that prices bf16 dots.
"""
import pytest
import torch

import mn

from conftest import cotangents, make_inputs, outputs_and_grads, scaled_error

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BACKENDS = [b for b in ("native", "triton") if mn.available_backends(DEVICE)[b] is None]
GAMMAS = (5.0, 100.0, 1000.0)

# Largest scaled error (max |got - exact| / max |exact|) over grad, inner_loss and the five input gradients,
# measured on (B, S, C, n) = (3, 40, 5, 16) and given ~4x headroom. float32 at gamma = 1000: the backward takes
# D_i = sum_j w_ij dw_ij from the identity <grad_i, dg_i> + dL_i loss_i (flash-attention's rowsum(dO o O)),
# whose rounding does not cancel against dw_ij's as autograd's sum does; gamma then scales it into dz
# (docs/design.md, "Dtypes").
TOLERANCES = {
    torch.float32: {5.0: 5e-6, 100.0: 5e-5, 1000.0: 5e-2},
    torch.bfloat16: {5.0: 2e-2, 100.0: 3e-2, 1000.0: 1e-1},
    torch.float16: {5.0: 5e-3, 100.0: 2e-2, 1000.0: 1.0},
}
# The dtypes in which the fused backends must also be no worse than autograd computing in that dtype.
LOW = (torch.bfloat16, torch.float16)


def _max_error(backend, dtype, gamma, shape):
    low = [t.to(dtype).requires_grad_() for t in make_inputs(*shape, seed=5, device=DEVICE)]
    exact = [t.detach().double().requires_grad_() for t in low]
    cot = cotangents(shape[0], shape[2], shape[3], device=DEVICE)
    ref = outputs_and_grads(exact, "autograd", cot, gamma=gamma)
    got = outputs_and_grads(low, backend, [c.to(dtype) for c in cot], gamma=gamma)
    assert all(a.dtype == dtype for a in got), backend
    return max(scaled_error(a, b) for a, b in zip(got, ref))


@pytest.mark.parametrize("gamma", GAMMAS, ids=lambda g: f"gamma{g:g}")
@pytest.mark.parametrize("dtype", list(TOLERANCES), ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
def test_error_against_float64_within_table(backend, dtype, gamma):
    shape = (8, 300, 10, 32) if DEVICE == "cuda" else (3, 40, 5, 16)
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        err = _max_error(backend, dtype, gamma, shape)
        literal = _max_error("autograd", dtype, gamma, shape) if dtype in LOW else float("inf")
    finally:
        torch.set_float32_matmul_precision(old)
    assert err < TOLERANCES[dtype][gamma], f"{err:.2e} >= {TOLERANCES[dtype][gamma]:.0e}"
    assert err <= literal, f"{backend} {err:.2e} worse than autograd computing in {dtype}: {literal:.2e}"
