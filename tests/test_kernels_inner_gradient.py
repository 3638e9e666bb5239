"""Kernel-level tests of mn_kernels.inner_gradient (the launchers, no autograd Function) against the
package's paper-literal reference, mn.reference.inner_gradient_autograd.

Without CUDA the Triton kernels run through the interpreter (TRITON_INTERPRET=1, set before triton is
imported); shapes stay small because the interpreter is slow. With CUDA the same tests run compiled.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from mn.reference import inner_gradient_autograd  # noqa: E402
from mn_kernels import dropout  # noqa: E402
from mn_kernels.dropout import keep_mask as torch_keep_mask  # noqa: E402
from mn_kernels.inner_gradient import inner_gradient_bwd, inner_gradient_fwd  # noqa: E402
from mn_kernels.tiles import keep_mask as tile_keep_mask  # noqa: E402

from helpers import TF32, low_precision_tol, make_inputs, matmul_precision, shape_id  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def keep_mask(B, S, p, seed):
    """The entry-dropout mask (True = kept); mn_kernels.dropout's, itself checked against numpy in
    tests/test_dropout.py."""
    return torch_keep_mask(dropout.seed_mix(seed), torch.arange(B), torch.arange(S), p)


def projection_coefficient(z, keys, values, weight, tau, gamma, keep):
    """a_ic = wh_c . U_ic = sum_j w_ij delta_jc cos_jc (the forward's saved B x C), by dense float64 algebra."""
    zh, kh, wh = (F.normalize(t, dim=1) for t in (z, keys, weight))
    w = torch.softmax((gamma * zh @ kh.t()).masked_fill(~keep, float("-inf")), dim=1).nan_to_num(0.0)
    cos = kh @ wh.t()
    delta = tau * (torch.softmax(tau * cos, dim=1) - values)
    return w @ (delta * cos)


def run_both(B, S, C, n, dtype, gamma=5.0, p=0.0, seed=0):
    """(kernel outputs, float64 reference outputs) of forward and backward for one random problem; the
    outputs are NAMES, the last one the forward's saved projection coefficient `a`."""
    # Round the inputs to `dtype` first, so that the comparison measures the kernels, not the inputs.
    inputs = [t.double() for t in make_inputs(B, S, C, n, dtype=dtype, seed=B + S + C + n)]
    ref_in = [t.clone().requires_grad_() for t in inputs]
    keep = keep_mask(B, S, p, seed)
    grad_r, loss_r = inner_gradient_autograd(*ref_in, gamma=gamma, entry_dropout=p,
                                             seed=dropout.seed_mix_tensor(seed, "cpu"))
    gen = torch.Generator().manual_seed(1)
    dgrad = torch.randn(B, C, n, generator=gen).to(dtype).double()
    dloss = torch.randn(B, generator=gen).to(dtype).double()
    back_r = torch.autograd.grad((grad_r * dgrad).sum() + (loss_r * dloss).sum(), ref_in)

    dev_in = [t.to(DEVICE, dtype) for t in inputs]
    mix = dropout.seed_mix_tensor(seed, DEVICE)
    grad, loss, lse, a, saved = inner_gradient_fwd(*dev_in, gamma, entry_dropout=p, seed=mix)
    back = inner_gradient_bwd(dgrad.to(DEVICE, dtype), dloss.to(DEVICE, dtype), *dev_in, grad, loss, lse, a, saved,
                              gamma, entry_dropout=p, seed=mix)
    out = [grad, loss, *back, a]
    ref = [grad_r, loss_r, *back_r, projection_coefficient(*inputs, gamma, keep)]
    return [o.detach().cpu() for o in out], [r.detach() for r in ref], lse.cpu(), keep


NAMES = ["grad", "inner_loss", "dz", "dkeys", "dvalues", "dweight", "dtau", "a"]


def assert_all_close(out, ref, atol, rtol):
    for name, o, r in zip(NAMES, out, ref):
        assert o.shape == r.shape, name
        assert torch.isfinite(o).all(), name
        torch.testing.assert_close(o.double(), r, atol=atol, rtol=rtol, msg=lambda m: f"{name}: {m}")


# ----------------------------------------------------------------------------------------------------
# float64: the kernels must agree with autograd to rounding
# ----------------------------------------------------------------------------------------------------
F64_SHAPES = [
    (1, 5, 3, 4),      # B = 1, S smaller than one entry tile
    (3, 37, 5, 8),     # S not a multiple of the tile
    (4, 16, 2, 16),    # C = 2, exact tiles
    (3, 20, 4, 3),     # n = 3 (padded to 16)
    (5, 37, 7, 19),    # everything odd
    (20, 300, 9, 5),   # several query blocks, class blocks and entry splits of the lse pass
]


@pytest.mark.parametrize("shape", F64_SHAPES, ids=shape_id)
def test_float64_matches_autograd(shape):
    out, ref, _, _ = run_both(*shape, torch.float64)
    assert_all_close(out, ref, atol=1e-10, rtol=1e-10)


def test_float64_large_gamma():
    # gamma = 60: exp(s - gamma) would underflow for the fixed shift; the lse pass uses a running max.
    out, ref, lse, _ = run_both(5, 37, 7, 19, torch.float64, gamma=60.0)
    assert torch.isfinite(lse).all()
    assert_all_close(out, ref, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("seed", [0, 7])
def test_float64_entry_dropout(seed):
    out, ref, _, keep = run_both(5, 37, 7, 19, torch.float64, p=0.5, seed=seed)
    assert 0 < keep.sum() < keep.numel()
    assert_all_close(out, ref, atol=1e-10, rtol=1e-10)


def test_float64_all_entries_dropped():
    # p = 0.9 over S = 3 entries: some queries keep nothing -> zero grad, zero loss, lse = -inf, no NaN.
    B, S, C, n, seed = 8, 3, 3, 4, 3
    out, ref, lse, keep = run_both(B, S, C, n, torch.float64, p=0.9, seed=seed)
    empty = ~keep.any(1)
    assert empty.any() and not empty.all(), "the case must mix empty and non-empty queries"
    grad, loss = out[0], out[1]
    assert (grad[empty] == 0).all() and (loss[empty] == 0).all()
    assert torch.isneginf(lse[empty]).all() and torch.isfinite(lse[~empty]).all()
    assert_all_close(out, ref, atol=1e-10, rtol=1e-10)


# ----------------------------------------------------------------------------------------------------
# Reduced precision against the float64 reference
# ----------------------------------------------------------------------------------------------------
# The per-dtype tables of tests/helpers.py at gamma = 5 (the kernels' default here).
LOW_CASES = [
    (torch.float32, "highest", low_precision_tol("triton", torch.float32, 5.0, DEVICE)),
    pytest.param(torch.float32, "high", TF32, marks=pytest.mark.skipif(DEVICE == "cpu", reason="TF32 is GPU-only")),
    (torch.bfloat16, "highest", low_precision_tol("triton", torch.bfloat16, 5.0, DEVICE)),
    (torch.float16, "highest", low_precision_tol("triton", torch.float16, 5.0, DEVICE)),
]


@pytest.mark.parametrize("dtype,precision,tol", LOW_CASES, ids=["fp32-ieee", "fp32-tf32", "bf16", "fp16"])
@pytest.mark.parametrize("shape", [(5, 37, 7, 19), (20, 300, 9, 5)], ids=shape_id)
def test_reduced_precision(shape, dtype, precision, tol):
    with matmul_precision(precision):
        out, ref, _, _ = run_both(*shape, dtype, p=0.5, seed=1)
    for name, o, r in zip(NAMES, out, ref):
        # The forward returns grad, inner_loss and `a` in the accumulation dtype (the backward needs them unrounded).
        assert o.dtype == (torch.float32 if name in ("grad", "inner_loss", "a") else dtype), name
        scale = r.abs().max().clamp_min(1e-30)
        err = (o.double() - r).abs().max() / scale
        assert err <= tol, f"{name}: max error {err:.2e} of the output scale > {tol:.0e}"


# ----------------------------------------------------------------------------------------------------
# Entry-dropout hash
# ----------------------------------------------------------------------------------------------------
@triton.jit
def _mask_probe(out_ptr, B, S, seed_ptr, drop_threshold, BLOCK_B: tl.constexpr, BLOCK_S: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.program_id(1) * BLOCK_S + tl.arange(0, BLOCK_S)
    keep = tile_keep_mask(rows[:, None], cols[None, :], B, S, seed_ptr, drop_threshold, True)
    tl.store(out_ptr + rows[:, None] * S + cols[None, :], keep.to(tl.int8),
             mask=(rows[:, None] < B) & (cols[None, :] < S))


@pytest.mark.parametrize("p,seed", [(0.5, 0), (0.5, 123456789), (0.25, 2**31 + 5), (0.9, 42)])
def test_hash_mask_matches_torch(p, seed):
    """The in-kernel mask function, bit for bit, against the int64 torch version of the hash."""
    B, S = 40, 70
    mix, threshold = dropout.seed_mix_tensor(seed, DEVICE), dropout.drop_threshold(p)
    out = torch.empty(B, S, dtype=torch.int8, device=DEVICE)
    _mask_probe[(triton.cdiv(B, 16), triton.cdiv(S, 32))](out, B, S, mix, threshold, BLOCK_B=16, BLOCK_S=32)
    expected = keep_mask(B, S, p, seed)
    assert torch.equal(out.cpu().bool(), expected)
    assert abs(expected.float().mean().item() - (1 - p)) < 0.1


def test_hash_mask_seen_by_forward():
    """The mask the forward actually applies: with every score equal (z orthogonal to all keys), a query
    attends uniformly to its kept entries, so lse_i = log(#kept_i) and loss_i = mean of ce over them."""
    B, S, C, n, p, seed = 6, 50, 3, 4, 0.5, 9
    z = torch.zeros(B, n, dtype=torch.float64)
    z[:, 0] = 1.0
    keys = torch.zeros(S, n, dtype=torch.float64)
    keys[:, 1] = 1.0
    keys[:, 2] = torch.linspace(-1, 1, S, dtype=torch.float64)  # distinct entries -> distinct ce
    values = torch.softmax(torch.randn(S, C, generator=torch.Generator().manual_seed(0), dtype=torch.float64), 1)
    weight = torch.randn(C, n, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    tau = torch.tensor(2.0, dtype=torch.float64)
    args = [t.to(DEVICE) for t in (z, keys, values, weight, tau)]
    _, loss, lse, *_ = inner_gradient_fwd(*args, gamma=3.0, entry_dropout=p, seed=dropout.seed_mix_tensor(seed, DEVICE))
    keep = keep_mask(B, S, p, seed).double()
    kh = F.normalize(keys, dim=1)
    ce = -(values * torch.log_softmax(tau * kh @ F.normalize(weight, dim=1).t(), 1)).sum(1)
    torch.testing.assert_close(lse.cpu(), keep.sum(1).log(), atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(loss.cpu(), (keep * ce).sum(1) / keep.sum(1), atol=1e-12, rtol=1e-12)
