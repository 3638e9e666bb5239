"""The per-entry half of the inner loss as kernels, forward and backward (the math: mn_kernels/entry_loss.py,
whose torch form the tests compare with): each entry's key norm, its softmax over the classes, cross-entropy
and delta, then their backward into the values, tau, the normalised weight and -- finishing what the main
backward kernel left in dkh -- the raw keys. One launch each instead of a dozen small host ops.

Entries are tiled; the classes are streamed in chunks of BLOCK_CC with a running log-sum-exp (any C), then again
for the terms that need the full normaliser."""
import triton
import triton.language as tl

from ..launching import autotune
from ..rownorm import EPS as ROW_EPS
from .configs import ENTRY_CONFIGS, ENTRY_NAMES, ENTRY_SMALL

EPS = tl.constexpr(ROW_EPS)


@triton.jit
def _entry_cosines(kh, wh_ptr, cls, C, n, k, PRECISION: tl.constexpr):
    """kh . wh_c for a tile of normalised keys and a chunk of classes `cls`, (BLOCK_S, BLOCK_CC), and the
    chunk's weight rows; 0 for classes past C (the callers mask them). The logits are tau times these."""
    wh = tl.load(wh_ptr + cls[:, None].to(tl.int64) * n + k[None, :], mask=(cls[:, None] < C) & (k[None, :] < n),
                 other=0.0)
    return tl.dot(kh, tl.trans(wh), input_precision=PRECISION, out_dtype=kh.dtype), wh


@triton.jit
def _entry_lse(kh, wh_ptr, v_ptr, cols, S, C, n, k, tau, BLOCK_CC: tl.constexpr, PRECISION: tl.constexpr):
    """Per entry of the tile: log sum_c exp(tau kh . wh_c) and sigma = sum_c v_c (running over class chunks)."""
    m = tl.full([kh.shape[0]], -float("inf"), dtype=kh.dtype)
    total = tl.zeros([kh.shape[0]], dtype=kh.dtype)
    sigma = tl.zeros([kh.shape[0]], dtype=kh.dtype)
    for c0 in range(0, C, BLOCK_CC):
        cls = c0 + tl.arange(0, BLOCK_CC)
        cos, wh = _entry_cosines(kh, wh_ptr, cls, C, n, k, PRECISION)
        l = tl.where(cls[None, :] < C, tau * cos, -float("inf"))         # past C: out of the softmax
        m_new = tl.maximum(m, tl.max(l, axis=1))
        total = total * tl.exp(m - m_new) + tl.sum(tl.exp(l - m_new[:, None]), axis=1)
        m = m_new
        v = tl.load(v_ptr + cols[:, None].to(tl.int64) * C + cls[None, :],
                    mask=(cls[None, :] < C) & (cols[:, None] < S), other=0.0)
        sigma += tl.sum(v, axis=1)
    return m + tl.log(total), sigma


@triton.jit
def _key_rows(keys_ptr, cols, k, S, n, ct: tl.constexpr):
    """Raw key rows (BLOCK_S, BLOCK_N) in the compute dtype, their reciprocal norms 1 / max(||k||, eps) and
    whether that clamp is active."""
    keys = tl.load(keys_ptr + cols[:, None].to(tl.int64) * n + k[None, :],
                   mask=(cols[:, None] < S) & (k[None, :] < n), other=0.0).to(ct)
    norm = tl.sqrt(tl.sum(keys * keys, axis=1))
    # A NaN norm stays NaN (tl.maximum would drop it), as torch's normalisation does.
    return keys, 1.0 / tl.maximum(norm, EPS, propagate_nan=tl.PropagateNan.ALL), norm < EPS


@autotune(ENTRY_NAMES, ENTRY_CONFIGS, ENTRY_SMALL, dtype_arg="wh_ptr")
@triton.jit
def entry_fwd_kernel(keys_ptr, wh_ptr, v_ptr, tau_ptr, k_rnorm_ptr, sigma_ptr, ce_ptr, deltaT_ptr,
                     S, C, n, s_bucket,
                     BLOCK_S: tl.constexpr, BLOCK_CC: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr):
    """For a tile of entries: 1 / max(||k_j||, eps), sigma_j, ce_j = -sum_c v_jc log p_jc and delta_jc =
    tau (sigma_j p_jc - v_jc) (class-major, C x S), p_j = softmax_c(tau kh_j . wh_c)."""
    cols = tl.program_id(0) * BLOCK_S + tl.arange(0, BLOCK_S)
    k = tl.arange(0, BLOCK_N)
    tau = tl.load(tau_ptr)
    keys, rnorm, clamped = _key_rows(keys_ptr, cols, k, S, n, tau.dtype)
    kh = keys * rnorm[:, None]
    lse, sigma = _entry_lse(kh, wh_ptr, v_ptr, cols, S, C, n, k, tau, BLOCK_CC, PRECISION)
    ce = tl.zeros([BLOCK_S], dtype=tau.dtype)
    for c0 in range(0, C, BLOCK_CC):
        cls = c0 + tl.arange(0, BLOCK_CC)
        cos, wh = _entry_cosines(kh, wh_ptr, cls, C, n, k, PRECISION)
        mask = (cls[None, :] < C) & (cols[:, None] < S)
        logp = tl.where(mask, tau * cos - lse[:, None], 0.0)
        v = tl.load(v_ptr + cols[:, None].to(tl.int64) * C + cls[None, :], mask=mask, other=0.0)
        ce -= tl.sum(v * logp, axis=1)
        delta = tau * (sigma[:, None] * tl.exp(logp) - v)
        tl.store(deltaT_ptr + cls[None, :].to(tl.int64) * S + cols[:, None], delta, mask=mask)
    tl.store(k_rnorm_ptr + cols, rnorm, mask=cols < S)
    tl.store(sigma_ptr + cols, sigma, mask=cols < S)
    tl.store(ce_ptr + cols, ce, mask=cols < S)


# dkh is read and written in place, and a program without a tile leaves its dwh partial as it found it: the
# autotuner's benchmark runs must start from their values each time.
@autotune(ENTRY_NAMES, ENTRY_CONFIGS, ENTRY_SMALL, dtype_arg="wh_ptr", restore_value=("dkh_ptr", "dwh_part_ptr"))
@triton.jit
def entry_bwd_kernel(keys_ptr, wh_ptr, v_ptr, tau_ptr, sigma_ptr, ddeltaT_ptr, dce_ptr, dkh_ptr, dv_ptr,
                     dwh_part_ptr, dtau_part_ptr,
                     S, C, n, s_bucket,
                     BLOCK_S: tl.constexpr, BLOCK_CC: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr):
    """The backward of `entry_fwd_kernel` for a contiguous group of entry tiles (grid: P programs), given
    ddelta (C x S) and dce (S) from the main backward kernel, and dkh (S x n, its share of the normalised keys'
    gradient): dv (S x C); dkh += tau dl^T wh, then the keys' normalisation backward, written back into dkh as
    the raw keys' gradient; and this program's partials of dwh = tau sum_j dl_j kh_j (C x n, read-add-write over
    its tiles) and of dtau = sum_jc (sigma p - v) ddelta + sum_jc dl l / tau. The host sums the partials in order.
    dl_jc = p_jc (dp_jc - sum_c p dp) + dce_j (sigma_j p_jc - v_jc) with dp = tau sigma ddelta."""
    pid = tl.program_id(0)
    num_programs = tl.num_programs(0)
    tau = tl.load(tau_ptr)
    k = tl.arange(0, BLOCK_N)
    tiles = tl.cdiv(S, BLOCK_S)
    first_tile = pid * tiles // num_programs
    dtau = tl.zeros([BLOCK_S], dtype=tau.dtype)
    for t in range(first_tile, (pid + 1) * tiles // num_programs):
        cols = t * BLOCK_S + tl.arange(0, BLOCK_S)
        keys, rnorm, clamped = _key_rows(keys_ptr, cols, k, S, n, tau.dtype)
        kh = keys * rnorm[:, None]
        lse, sigma_unused = _entry_lse(kh, wh_ptr, v_ptr, cols, S, C, n, k, tau, BLOCK_CC, PRECISION)
        sigma = tl.load(sigma_ptr + cols, mask=cols < S, other=0.0)
        dce = tl.load(dce_ptr + cols, mask=cols < S, other=0.0)
        pdd = tl.zeros([BLOCK_S], dtype=tau.dtype)                      # sum_c p ddelta
        for c0 in range(0, C, BLOCK_CC):
            cls = c0 + tl.arange(0, BLOCK_CC)
            cos, wh = _entry_cosines(kh, wh_ptr, cls, C, n, k, PRECISION)
            mask = (cls[None, :] < C) & (cols[:, None] < S)
            dd = tl.load(ddeltaT_ptr + cls[None, :].to(tl.int64) * S + cols[:, None], mask=mask, other=0.0)
            pdd += tl.sum(tl.where(mask, tl.exp(tau * cos - lse[:, None]), 0.0) * dd, axis=1)
        dkh = tl.zeros([BLOCK_S, BLOCK_N], dtype=tau.dtype)
        for c0 in range(0, C, BLOCK_CC):
            cls = c0 + tl.arange(0, BLOCK_CC)
            cos, wh = _entry_cosines(kh, wh_ptr, cls, C, n, k, PRECISION)
            mask = (cls[None, :] < C) & (cols[:, None] < S)
            logp = tl.where(mask, tau * cos - lse[:, None], 0.0)
            p = tl.where(mask, tl.exp(logp), 0.0)
            v = tl.load(v_ptr + cols[:, None].to(tl.int64) * C + cls[None, :], mask=mask, other=0.0)
            dd = tl.load(ddeltaT_ptr + cls[None, :].to(tl.int64) * S + cols[:, None], mask=mask, other=0.0)
            tl.store(dv_ptr + cols[:, None].to(tl.int64) * C + cls[None, :],
                     tau * (pdd[:, None] - dd) - dce[:, None] * logp, mask=mask)
            q = sigma[:, None] * p - v
            dl = tau * sigma[:, None] * p * (dd - pdd[:, None]) + dce[:, None] * q
            dl = tl.where(mask, dl, 0.0)
            dtau += tl.sum(q * dd + dl * cos, axis=1)                        # dl l / tau, finite at tau 0
            dkh = tl.dot((tau * dl).to(wh.dtype), wh, dkh, input_precision=PRECISION, out_dtype=tau.dtype)
            # This program's dwh partial for the chunk (first tile of the program: plain write).
            part = dwh_part_ptr + (pid * C + cls[:, None]).to(tl.int64) * n + k[None, :]
            part_mask = (cls[:, None] < C) & (k[None, :] < n)
            acc = tl.zeros([BLOCK_CC, BLOCK_N], dtype=tau.dtype)
            if t > first_tile:
                acc = tl.load(part, mask=part_mask, other=0.0)
            acc = tl.dot(tl.trans(tau * dl).to(kh.dtype), kh, acc, input_precision=PRECISION, out_dtype=tau.dtype)
            tl.store(part, acc, mask=part_mask)
        # The keys' normalisation backward: (dkh - kh (kh . dkh)) / ||k||, or dkh / eps where clamped.
        rows = cols[:, None].to(tl.int64) * n + k[None, :]
        row_mask = (cols[:, None] < S) & (k[None, :] < n)
        dkh += tl.load(dkh_ptr + rows, mask=row_mask, other=0.0)
        along = tl.where(clamped, 0.0, tl.sum(kh * dkh, axis=1))
        tl.store(dkh_ptr + rows, (dkh - kh * along[:, None]) * rnorm[:, None], mask=row_mask)
        # The partials' read-add-writes are re-read by other threads of this program at its next tile.
        tl.debug_barrier()
    tl.store(dtau_part_ptr + pid, tl.sum(dtau, axis=0))
