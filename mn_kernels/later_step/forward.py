"""Forward kernels of the later inner step: the per-(query, entry) class statistics, then the contraction with
its per-example projection epilogue (the math: mn_kernels/later_step/__init__.py)."""
import triton
import triton.language as tl

from ..launching import autotune
from ..tiles import attention, class_rows, keep_mask, key_tile, query_tile, store_projected
from .configs import FWD_CONFIGS, ROW_NAMES, ROW_SMALL, STATS_CONFIGS, STATS_NAMES, STATS_SMALL


@triton.jit
def class_rows_of(x_ptr, rows, cls, B, C, n, k):
    """Rows (rows_r, cls_r) of a B x C x n array (row i*C + c), (len(rows), BLOCK_N); 0 outside B, C and n."""
    valid = (rows < B) & (cls < C)
    return tl.load(x_ptr + (rows.to(tl.int64) * C + cls)[:, None] * n + k[None, :],
                   mask=valid[:, None] & (k[None, :] < n), other=0.0)


@autotune(STATS_NAMES, STATS_CONFIGS, STATS_SMALL, dtype_arg="ph_ptr")
@triton.jit(do_not_specialize=["B"])
def stats_kernel(ph_ptr, keys_ptr, k_rnorm_ptr, vT_ptr, sigma_ptr, tau_ptr, m_ptr, ce_ptr,
                 B, S, C, n, s_bucket,
                 BLOCK_B: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr):
    """m_ij = logsumexp_c l_ijc and ce_ij = sigma_j m_ij - sum_c v_jc l_ijc for a (query block, entry tile),
    by a running maximum over the classes (B x S each)."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.program_id(1) * BLOCK_S + tl.arange(0, BLOCK_S)
    k = tl.arange(0, BLOCK_N)
    tau = tl.load(tau_ptr)
    kh = key_tile(keys_ptr, k_rnorm_ptr, cols, k, S, n).to(ph_ptr.dtype.element_ty)
    m = tl.full([BLOCK_B, BLOCK_S], -float("inf"), dtype=tau.dtype)
    total = tl.zeros([BLOCK_B, BLOCK_S], dtype=tau.dtype)
    vl = tl.zeros([BLOCK_B, BLOCK_S], dtype=tau.dtype)
    v_ptrs = vT_ptr + cols                 # class c's values: c S may pass 2^31, the pointer not
    for c in range(0, C):
        ph = class_rows_of(ph_ptr, rows, tl.zeros_like(rows) + c, B, C, n, k)
        l = tau * tl.dot(ph, tl.trans(kh), input_precision=PRECISION, out_dtype=tau.dtype)
        m_new = tl.maximum(m, l)
        total = total * tl.exp(m - m_new) + tl.exp(l - m_new)
        m = m_new
        v = tl.load(v_ptrs, mask=cols < S, other=0.0)
        vl += v[None, :] * l
        v_ptrs += S
    m += tl.log(total)
    sigma = tl.load(sigma_ptr + cols, mask=cols < S, other=0.0)
    out = rows[:, None].to(tl.int64) * S + cols[None, :]
    mask = (rows[:, None] < B) & (cols[None, :] < S)
    tl.store(m_ptr + out, m, mask=mask)
    tl.store(ce_ptr + out, sigma[None, :] * m - vl, mask=mask)


@autotune(ROW_NAMES, FWD_CONFIGS, ROW_SMALL)
@triton.jit(do_not_specialize=["B", "drop_threshold"])
def fwd_kernel(zh_ptr, keys_ptr, k_rnorm_ptr, ph_ptr, p_rnorm_ptr, vT_ptr, sigma_ptr, tau_ptr, lse_ptr, m_ptr,
               ce_ptr, grad_ptr, loss_ptr, a_ptr,
               B, S, C, n, seed_ptr, drop_threshold, s_bucket,
               BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_N: tl.constexpr,
               HAS_DROPOUT: tl.constexpr, PRECISION: tl.constexpr):
    """grad[i, c] = P_ic sum_j w_ij delta_ijc kh_j for a (query block, class block), with P_ic the projection of
    query i's own phh_ic; a[i, c] = phh_ic . U_ic; loss from class block 0."""
    pid_b = tl.program_id(0)
    pid_c = tl.program_id(1)
    rows = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    k = tl.arange(0, BLOCK_N)
    tau = tl.load(tau_ptr)
    zh = query_tile(zh_ptr, rows, k, B, n)
    lse = tl.load(lse_ptr + rows, mask=rows < B, other=float("-inf"))
    i, c, valid = class_rows(pid_b, pid_c, B, C, BLOCK_B, BLOCK_C)
    ph = class_rows_of(ph_ptr, i, c, B, C, n, k)                                       # (BLOCK_B*BLOCK_C, BLOCK_N)

    acc = tl.zeros([BLOCK_B * BLOCK_C, BLOCK_N], dtype=tau.dtype)
    loss = tl.zeros([BLOCK_B], dtype=tau.dtype)
    for j0 in range(0, S, BLOCK_S):
        cols = j0 + tl.arange(0, BLOCK_S)
        kh = key_tile(keys_ptr, k_rnorm_ptr, cols, k, S, n).to(zh.dtype)
        keep = keep_mask(rows[:, None], cols[None, :], B, S, seed_ptr, drop_threshold, HAS_DROPOUT)
        w = attention(zh, kh, lse, keep, PRECISION)                                  # (BLOCK_B, BLOCK_S)
        l = tau * tl.dot(ph, tl.trans(kh), input_precision=PRECISION, out_dtype=tau.dtype)   # (B_C rows, BLOCK_S)
        tile = rows[:, None].to(tl.int64) * S + cols[None, :]
        tile_mask = (rows[:, None] < B) & (cols[None, :] < S)
        m = tl.load(m_ptr + tile, mask=tile_mask, other=0.0)
        p = tl.exp(l - tl.reshape(tl.broadcast_to(m[:, None, :], (BLOCK_B, BLOCK_C, BLOCK_S)),
                                  (BLOCK_B * BLOCK_C, BLOCK_S)))
        v = tl.load(vT_ptr + c[:, None].to(tl.int64) * S + cols[None, :], mask=(c[:, None] < C) & (cols[None, :] < S),
                    other=0.0)
        sigma = tl.load(sigma_ptr + cols, mask=cols < S, other=0.0)
        # A[(i, c), j] = w_ij delta_ijc, the left operand of the contraction over the entry tile.
        a = tl.reshape(tl.broadcast_to(w[:, None, :], (BLOCK_B, BLOCK_C, BLOCK_S)), (BLOCK_B * BLOCK_C, BLOCK_S))
        a *= tau * (sigma[None, :] * p - v)
        acc = tl.dot(a.to(kh.dtype), kh, acc, input_precision=PRECISION, out_dtype=tau.dtype)
        if pid_c == 0:
            ce = tl.load(ce_ptr + tile, mask=tile_mask, other=0.0)
            loss += tl.sum(w * ce, axis=1)

    # Epilogue: grad = (U - phh (phh . U)) / ||phi||, one row per (query, class), each with its own phh.
    phc = ph.to(tau.dtype)
    rnorm = tl.load(p_rnorm_ptr + i.to(tl.int64) * C + c, mask=valid, other=0.0)
    store_projected(acc, phc, rnorm, i, c, valid, k, C, n, grad_ptr, a_ptr)
    if pid_c == 0:
        tl.store(loss_ptr + rows, loss.to(loss_ptr.dtype.element_ty), mask=rows < B)
