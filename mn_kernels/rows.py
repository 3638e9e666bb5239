"""Row normalisation and its backward as Triton kernels, for the launchers' prologue and epilogue: one launch
where the torch form (mn_kernels/rownorm.py, which the tests compare with) takes about six.

    normalize_rows_kernel   out_r = x_r / max(||x_r||, eps),  rnorm_r = 1 / max(||x_r||, eps)
    rows_bwd_kernel         dx_r = (g_r - x_r rnorm_r^2 (x_r . g_r)) rnorm_r + extra_r,  g_r = sum_p parts[p, r]
                            (g_r rnorm_r + extra_r where the clamp is active: ||x_r|| < eps)

No scale argument: a Python float reaches a kernel as fp32 and would limit float64 results; callers scale on the
host, where the backward is linear in g.
"""
import torch
import triton
import triton.language as tl

from .rownorm import EPS

_EPS = tl.constexpr(EPS)
_ROWS = 16                     # rows per program


@triton.jit
def normalize_rows_kernel(x_ptr, out_ptr, rnorm_ptr, R, n, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    k = tl.arange(0, BLOCK_N)
    mask = (rows[:, None] < R) & (k[None, :] < n)
    at = rows[:, None].to(tl.int64) * n + k[None, :]
    x = tl.load(x_ptr + at, mask=mask, other=0.0).to(rnorm_ptr.dtype.element_ty)
    # A NaN row stays NaN (tl.maximum would drop it), as torch's normalisation does.
    rnorm = 1.0 / tl.maximum(tl.sqrt(tl.sum(x * x, axis=1)), _EPS, propagate_nan=tl.PropagateNan.ALL)
    tl.store(out_ptr + at, (x * rnorm[:, None]).to(out_ptr.dtype.element_ty), mask=mask)
    tl.store(rnorm_ptr + rows, rnorm, mask=rows < R)


@triton.jit
def rows_bwd_kernel(parts_ptr, x_ptr, rnorm_ptr, extra_ptr, out_ptr, P, R, n,
                    HAS_EXTRA: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    k = tl.arange(0, BLOCK_N)
    mask = (rows[:, None] < R) & (k[None, :] < n)
    at = rows[:, None].to(tl.int64) * n + k[None, :]
    rnorm = tl.load(rnorm_ptr + rows, mask=rows < R, other=0.0)
    g = tl.zeros([BLOCK_R, BLOCK_N], dtype=rnorm.dtype)
    part_ptrs = parts_ptr + at                                          # a pointer: P R n may pass 2^31
    for _ in range(0, P):                                               # fixed order: deterministic
        g += tl.load(part_ptrs, mask=mask, other=0.0)
        part_ptrs += R * n
    x = tl.load(x_ptr + at, mask=mask, other=0.0).to(rnorm.dtype)
    clamped = rnorm >= 1.0 / _EPS
    along = tl.where(clamped, 0.0, rnorm * rnorm * tl.sum(x * g, axis=1))
    dx = (g - x * along[:, None]) * rnorm[:, None]
    if HAS_EXTRA:
        dx += tl.load(extra_ptr + at, mask=mask, other=0.0)
    tl.store(out_ptr + at, dx, mask=mask)


def normalize_rows(x: torch.Tensor, ct: torch.dtype):
    """(x / max(||x||, eps), 1 / max(||x||, eps) (R,)), both in `ct`, for x (R, n) of any floating dtype."""
    R, n = x.shape
    out = torch.empty(R, n, device=x.device, dtype=ct)
    rnorm = torch.empty(R, device=x.device, dtype=ct)
    normalize_rows_kernel[(triton.cdiv(R, _ROWS),)](x, out, rnorm, R, n, BLOCK_R=_ROWS,
                                                      BLOCK_N=max(16, triton.next_power_of_2(n)))
    return out, rnorm


def rows_bwd(parts: torch.Tensor, x: torch.Tensor, rnorm: torch.Tensor, extra=None):
    """The gradient of x (R, n) given that of its normalised rows, the sum of `parts` (P, R, n) over its first
    axis, plus `extra` (R, n) if given; in rnorm's dtype."""
    P, R, n = parts.shape
    out = torch.empty(R, n, device=x.device, dtype=rnorm.dtype)
    rows_bwd_kernel[(triton.cdiv(R, _ROWS),)](parts, x, rnorm, parts if extra is None else extra, out, P, R, n,
                                              HAS_EXTRA=extra is not None, BLOCK_R=_ROWS,
                                              BLOCK_N=max(16, triton.next_power_of_2(n)))
    return out
