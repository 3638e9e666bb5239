"""Forward kernels of the inner gradient: the attention log-normaliser, then the contraction with its
projection epilogue (the math: mn_kernels/inner_gradient/__init__.py)."""
import triton
import triton.language as tl

from ..launching import autotune
from ..tiles import attention, class_rows, keep_mask, key_tile, query_tile, store_projected
from .configs import FWD_CONFIGS, FWD_NAMES, FWD_SMALL, LSE_CONFIGS, LSE_NAMES, LSE_SMALL


@autotune(LSE_NAMES, LSE_CONFIGS, LSE_SMALL)
@triton.jit(do_not_specialize=["B", "drop_threshold"])
def lse_kernel(zh_ptr, keys_ptr, k_rnorm_ptr, m_ptr, l_ptr,
               B, S, C, n, seed_ptr, drop_threshold, entries_per_split, s_bucket,
               BLOCK_B: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_N: tl.constexpr,
               HAS_DROPOUT: tl.constexpr, PRECISION: tl.constexpr):
    """Partial (running max m, sum l) of the scores of one query block over one split of the entries.

    The split axis exists for parallelism only (B / BLOCK_B programs alone would idle the GPU); the host
    combines the splits with a log-sum-exp in fixed order."""
    pid_b = tl.program_id(0)
    pid_s = tl.program_id(1)
    rows = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    k = tl.arange(0, BLOCK_N)
    zh = query_tile(zh_ptr, rows, k, B, n)
    # m starts finite (far below any score, |s| <= gamma) so that a tile whose entries are all dropped
    # gives exp(m - m_new) = 1 rather than exp(-inf + inf) = NaN; l stays 0 for such a query.
    m_i = tl.full([BLOCK_B], -1.0e30, dtype=tl.float32).to(m_ptr.dtype.element_ty)
    l_i = tl.zeros([BLOCK_B], dtype=m_ptr.dtype.element_ty)
    start = pid_s * entries_per_split
    end = tl.minimum(start + entries_per_split, S)
    for j0 in range(start, end, BLOCK_S):
        cols = j0 + tl.arange(0, BLOCK_S)
        kh = key_tile(keys_ptr, k_rnorm_ptr, cols, k, end, n).to(zh.dtype)
        keep = keep_mask(rows[:, None], cols[None, :], B, end, seed_ptr, drop_threshold, HAS_DROPOUT)
        s = tl.dot(zh, tl.trans(kh), input_precision=PRECISION)
        s = tl.where(keep, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        l_i = l_i * tl.exp(m_i - m_new) + tl.sum(tl.exp(s - m_new[:, None]), axis=1)
        m_i = m_new
    out = pid_s * B + rows
    tl.store(m_ptr + out, m_i, mask=rows < B)
    tl.store(l_ptr + out, l_i, mask=rows < B)


@autotune(FWD_NAMES, FWD_CONFIGS, FWD_SMALL)
@triton.jit(do_not_specialize=["B", "drop_threshold"])
def fwd_kernel(zh_ptr, keys_ptr, k_rnorm_ptr, deltaT_ptr, ce_ptr, lse_ptr, wh_ptr, w_rnorm_ptr,
               grad_ptr, loss_ptr, a_ptr,
               B, S, C, n, seed_ptr, drop_threshold, s_bucket,
               BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr,
               BLOCK_N: tl.constexpr, HAS_DROPOUT: tl.constexpr, PRECISION: tl.constexpr):
    """grad[i, c] = P_c sum_j w_ij delta_jc kh_j for a (query block, class block); loss from class block 0;
    a[i, c] = wh_c . U_ic, the projection's coefficient, which the backward needs (B x C, no recomputation).

    Scores are recomputed by every class block (2 B S n flops per block, 1/BLOCK_C of the contraction)
    rather than looping over class blocks inside: that would need C/BLOCK_C accumulators of
    (BLOCK_B*BLOCK_C) x n each, and the class-block grid axis is what gives small batches parallelism."""
    pid_b = tl.program_id(0)
    pid_c = tl.program_id(1)
    acc_ty = ce_ptr.dtype.element_ty  # fp32, or fp64 for fp64 inputs
    rows = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    cls = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    k = tl.arange(0, BLOCK_N)
    zh = query_tile(zh_ptr, rows, k, B, n)
    lse = tl.load(lse_ptr + rows, mask=rows < B, other=float("-inf"))

    acc = tl.zeros([BLOCK_B * BLOCK_C, BLOCK_N], dtype=acc_ty)
    loss = tl.zeros([BLOCK_B], dtype=acc_ty)
    for j0 in range(0, S, BLOCK_S):
        cols = j0 + tl.arange(0, BLOCK_S)
        kh = key_tile(keys_ptr, k_rnorm_ptr, cols, k, S, n).to(zh.dtype)
        keep = keep_mask(rows[:, None], cols[None, :], B, S, seed_ptr, drop_threshold, HAS_DROPOUT)
        w = attention(zh, kh, lse, keep, PRECISION)
        delta = tl.load(deltaT_ptr + cls[:, None].to(tl.int64) * S + cols[None, :],
                        mask=(cls[:, None] < C) & (cols[None, :] < S), other=0.0)
        # A[(i, c), j] = w_ij delta_jc, the left operand of the contraction over the entry tile.
        a = tl.reshape(w[:, None, :] * delta[None, :, :], (BLOCK_B * BLOCK_C, BLOCK_S))
        acc = tl.dot(a.to(kh.dtype), kh, acc, input_precision=PRECISION, out_dtype=acc_ty)
        ce = tl.load(ce_ptr + cols, mask=cols < S, other=0.0)
        loss += tl.sum(w * ce[None, :], axis=1)

    # Epilogue: grad = (U - wh_c (wh_c . U)) / ||w_c||, one row per (query, class).
    i, c, valid = class_rows(pid_b, pid_c, B, C, BLOCK_B, BLOCK_C)
    wh = tl.load(wh_ptr + c[:, None] * n + k[None, :], mask=(c[:, None] < C) & (k[None, :] < n), other=0.0)
    rnorm = tl.load(w_rnorm_ptr + c, mask=c < C, other=0.0)
    store_projected(acc, wh, rnorm, i, c, valid, k, C, n, grad_ptr, a_ptr)
    if pid_c == 0:
        tl.store(loss_ptr + rows, loss.to(loss_ptr.dtype.element_ty), mask=rows < B)
