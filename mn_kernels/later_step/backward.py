"""Backward kernels of the later inner step, three passes (the math: mn_kernels/later_step/__init__.py): the
per-(query, entry) sums over classes rdot and vX; then, query-major, dphh and dzh; then, entry-major, dkh, dv
and the dtau partials."""
import triton
import triton.language as tl

from ..launching import autotune
from ..tiles import attention, attention_t, class_rows, keep_mask, key_tile, query_tile
from .configs import (
    BWD_STATS_CONFIGS,
    ENTRY_CONFIGS,
    ENTRY_NAMES,
    ENTRY_SMALL,
    QUERY_CONFIGS,
    ROW_NAMES,
    ROW_SMALL,
    STATS_NAMES,
    STATS_SMALL,
)
from .forward import class_rows_of


@triton.jit
def projected_rows(dg_ptr, hw_ptr, p_rnorm_ptr, ph, rows, cls, B, C, n, k):
    """dU rows = (dg - phh hw) / ||phi|| for (rows_r, cls_r) (one class per row), in dg's dtype; ph: those rows
    of phh as loaded."""
    valid = (rows < B) & (cls < C)
    flat = rows.to(tl.int64) * C + cls
    h = class_rows_of(dg_ptr, rows, cls, B, C, n, k)
    hw = tl.load(hw_ptr + flat, mask=valid, other=0.0)
    rnorm = tl.load(p_rnorm_ptr + flat, mask=valid, other=0.0)
    return (h - hw[:, None] * ph.to(h.dtype)) * rnorm[:, None]


@autotune(STATS_NAMES, BWD_STATS_CONFIGS, STATS_SMALL, dtype_arg="ph_ptr")
@triton.jit(do_not_specialize=["B"])
def bwd_stats_kernel(ph_ptr, keys_ptr, k_rnorm_ptr, vT_ptr, tau_ptr, m_ptr, dg_ptr, hw_ptr, p_rnorm_ptr,
                     rdot_ptr, vx_ptr,
                     B, S, C, n, s_bucket,
                     BLOCK_B: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_N: tl.constexpr,
                     PRECISION: tl.constexpr):
    """rdot_ij = sum_c p_ijc X_icj and vX_ij = sum_c v_jc X_icj for a (query block, entry tile), X = dU . kh."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.program_id(1) * BLOCK_S + tl.arange(0, BLOCK_S)
    k = tl.arange(0, BLOCK_N)
    tau = tl.load(tau_ptr)
    kh = key_tile(keys_ptr, k_rnorm_ptr, cols, k, S, n).to(ph_ptr.dtype.element_ty)
    tile = rows[:, None].to(tl.int64) * S + cols[None, :]
    tile_mask = (rows[:, None] < B) & (cols[None, :] < S)
    m = tl.load(m_ptr + tile, mask=tile_mask, other=0.0)
    rdot = tl.zeros([BLOCK_B, BLOCK_S], dtype=tau.dtype)
    vx = tl.zeros([BLOCK_B, BLOCK_S], dtype=tau.dtype)
    v_ptrs = vT_ptr + cols                 # class c's values: c S may pass 2^31, the pointer not
    for c in range(0, C):
        cls = tl.zeros_like(rows) + c
        ph = class_rows_of(ph_ptr, rows, cls, B, C, n, k)
        du = projected_rows(dg_ptr, hw_ptr, p_rnorm_ptr, ph, rows, cls, B, C, n, k).to(kh.dtype)
        p = tl.exp(tau * tl.dot(ph, tl.trans(kh), input_precision=PRECISION, out_dtype=tau.dtype) - m)
        x = tl.dot(du, tl.trans(kh), input_precision=PRECISION, out_dtype=tau.dtype)
        rdot += p * x
        v = tl.load(v_ptrs, mask=cols < S, other=0.0)
        vx += v[None, :] * x
        v_ptrs += S
    tl.store(rdot_ptr + tile, rdot, mask=tile_mask)
    tl.store(vx_ptr + tile, vx, mask=tile_mask)


@autotune(ROW_NAMES, QUERY_CONFIGS, ROW_SMALL)
@triton.jit(do_not_specialize=["B", "drop_threshold"])
def bwd_query_kernel(zh_ptr, keys_ptr, k_rnorm_ptr, ph_ptr, vT_ptr, sigma_ptr, tau_ptr, lse_ptr, m_ptr, ce_ptr,
                     dg_ptr, hw_ptr, p_rnorm_ptr, rdot_ptr, vx_ptr, dL_ptr, D_ptr, dph_ptr, dzh_ptr,
                     B, S, C, n, seed_ptr, drop_threshold, s_bucket,
                     BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_N: tl.constexpr,
                     HAS_DROPOUT: tl.constexpr, PRECISION: tl.constexpr):
    """dphh_ic = tau sum_j dl_ijc kh_j for a (query block, class block); the class-block-0 programs also
    dzh_i = sum_j ds_ij kh_j (gamma is applied on the host)."""
    pid_b = tl.program_id(0)
    pid_c = tl.program_id(1)
    rows = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    k = tl.arange(0, BLOCK_N)
    tau = tl.load(tau_ptr)
    zh = query_tile(zh_ptr, rows, k, B, n)
    lse = tl.load(lse_ptr + rows, mask=rows < B, other=float("-inf"))
    dL = tl.load(dL_ptr + rows, mask=rows < B, other=0.0)
    D = tl.load(D_ptr + rows, mask=rows < B, other=0.0)
    i, c, valid = class_rows(pid_b, pid_c, B, C, BLOCK_B, BLOCK_C)
    ph = class_rows_of(ph_ptr, i, c, B, C, n, k)
    du = projected_rows(dg_ptr, hw_ptr, p_rnorm_ptr, ph, i, c, B, C, n, k).to(ph.dtype)
    dL_r = tl.reshape(tl.broadcast_to(dL[:, None], (BLOCK_B, BLOCK_C)), (BLOCK_B * BLOCK_C,))

    dph = tl.zeros([BLOCK_B * BLOCK_C, BLOCK_N], dtype=tau.dtype)
    dz = tl.zeros([BLOCK_B, BLOCK_N], dtype=tau.dtype)
    for j0 in range(0, S, BLOCK_S):
        cols = j0 + tl.arange(0, BLOCK_S)
        kh = key_tile(keys_ptr, k_rnorm_ptr, cols, k, S, n).to(zh.dtype)
        keep = keep_mask(rows[:, None], cols[None, :], B, S, seed_ptr, drop_threshold, HAS_DROPOUT)
        w = attention(zh, kh, lse, keep, PRECISION)                                  # (BLOCK_B, BLOCK_S)
        tile = rows[:, None].to(tl.int64) * S + cols[None, :]
        tile_mask = (rows[:, None] < B) & (cols[None, :] < S)
        m = tl.load(m_ptr + tile, mask=tile_mask, other=0.0)
        rdot = tl.load(rdot_ptr + tile, mask=tile_mask, other=0.0)
        sigma = tl.load(sigma_ptr + cols, mask=cols < S, other=0.0)
        l = tau * tl.dot(ph, tl.trans(kh), input_precision=PRECISION, out_dtype=tau.dtype)   # (B_C rows, BLOCK_S)
        p = tl.exp(l - tl.reshape(tl.broadcast_to(m[:, None, :], (BLOCK_B, BLOCK_C, BLOCK_S)),
                                  (BLOCK_B * BLOCK_C, BLOCK_S)))
        x = tl.dot(du, tl.trans(kh), input_precision=PRECISION, out_dtype=tau.dtype)
        v = tl.load(vT_ptr + c[:, None].to(tl.int64) * S + cols[None, :], mask=(c[:, None] < C) & (cols[None, :] < S),
                    other=0.0)
        w_r = tl.reshape(tl.broadcast_to(w[:, None, :], (BLOCK_B, BLOCK_C, BLOCK_S)), (BLOCK_B * BLOCK_C, BLOCK_S))
        rdot_r = tl.reshape(tl.broadcast_to(rdot[:, None, :], (BLOCK_B, BLOCK_C, BLOCK_S)),
                            (BLOCK_B * BLOCK_C, BLOCK_S))
        sp = sigma[None, :] * p
        dl = w_r * (tau * sp * (x - rdot_r) + dL_r[:, None] * (sp - v))
        dph = tl.dot(dl.to(kh.dtype), kh, dph, input_precision=PRECISION, out_dtype=tau.dtype)
        if pid_c == 0:
            vx = tl.load(vx_ptr + tile, mask=tile_mask, other=0.0)
            ce = tl.load(ce_ptr + tile, mask=tile_mask, other=0.0)
            ds = w * (tau * (sigma[None, :] * rdot - vx) + dL[:, None] * ce - D[:, None])
            dz = tl.dot(ds.to(kh.dtype), kh, dz, input_precision=PRECISION, out_dtype=tau.dtype)

    tl.store(dph_ptr + (i[:, None].to(tl.int64) * C + c[:, None]) * n + k[None, :], tau * dph,
             mask=valid[:, None] & (k[None, :] < n))
    if pid_c == 0:
        tl.store(dzh_ptr + rows[:, None].to(tl.int64) * n + k[None, :], dz,
                 mask=(rows[:, None] < B) & (k[None, :] < n))


@autotune(ENTRY_NAMES, ENTRY_CONFIGS, ENTRY_SMALL)
@triton.jit(do_not_specialize=["B", "drop_threshold"])
def bwd_entry_kernel(zh_ptr, keys_ptr, k_rnorm_ptr, ph_ptr, vT_ptr, sigma_ptr, tau_ptr, lse_ptr, m_ptr, ce_ptr,
                     dg_ptr, hw_ptr, p_rnorm_ptr, rdot_ptr, vx_ptr, dL_ptr, D_ptr, dkh_ptr, dvT_ptr,
                     dtau_part_ptr,
                     B, S, C, n, seed_ptr, drop_threshold, s_bucket,
                     BLOCK_B: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_N: tl.constexpr,
                     HAS_DROPOUT: tl.constexpr, PRECISION: tl.constexpr):
    """For a contiguous group of entry tiles (grid: P programs, each with at least one tile), entry-major:
    dkh_j = gamma sum_i ds_ij zh_i + sum_ic [w_ij delta_ijc dU_ic + tau dl_ijc phh_ic] and dv_jc, which the
    program owns outright, and its partial sum of dtau. dv is revisited per query block as a read-add-write
    (first visit writes), by this program only."""
    pid = tl.program_id(0)
    num_programs = tl.num_programs(0)
    tau = tl.load(tau_ptr)
    k = tl.arange(0, BLOCK_N)
    tiles = tl.cdiv(S, BLOCK_S)
    dtau = tl.zeros([BLOCK_S], dtype=tau.dtype)
    for t in range(pid * tiles // num_programs, (pid + 1) * tiles // num_programs):
        cols = t * BLOCK_S + tl.arange(0, BLOCK_S)
        kh = key_tile(keys_ptr, k_rnorm_ptr, cols, k, S, n).to(zh_ptr.dtype.element_ty)
        sigma = tl.load(sigma_ptr + cols, mask=cols < S, other=0.0)
        dkh = tl.zeros([BLOCK_S, BLOCK_N], dtype=tau.dtype)
        for b0 in range(0, B, BLOCK_B):
            rows = b0 + tl.arange(0, BLOCK_B)
            zh = query_tile(zh_ptr, rows, k, B, n)
            lse = tl.load(lse_ptr + rows, mask=rows < B, other=float("-inf"))
            dL = tl.load(dL_ptr + rows, mask=rows < B, other=0.0)
            D = tl.load(D_ptr + rows, mask=rows < B, other=0.0)
            keep = keep_mask(rows[None, :], cols[:, None], B, S, seed_ptr, drop_threshold, HAS_DROPOUT)
            wT = attention_t(zh, kh, lse, keep, PRECISION)                         # w_ij, (BLOCK_S, BLOCK_B)
            tileT = rows[None, :].to(tl.int64) * S + cols[:, None]
            maskT = (rows[None, :] < B) & (cols[:, None] < S)
            mT = tl.load(m_ptr + tileT, mask=maskT, other=0.0)
            rdotT = tl.load(rdot_ptr + tileT, mask=maskT, other=0.0)
            vxT = tl.load(vx_ptr + tileT, mask=maskT, other=0.0)
            ceT = tl.load(ce_ptr + tileT, mask=maskT, other=0.0)
            sr = sigma[:, None] * rdotT - vxT
            dsT = wT * (tau * sr + ceT * dL[None, :] - D[None, :])
            # zh here is gamma zh: this is the gamma sum_i ds_ij zh_i term.
            dkh = tl.dot(dsT.to(zh.dtype), zh, dkh, input_precision=PRECISION, out_dtype=tau.dtype)
            dtau += tl.sum(wT * sr, axis=1)
            dv_ptrs = dvT_ptr + cols
            v_ptrs = vT_ptr + cols                 # class c's values: c S may pass 2^31, the pointer not
            for c in range(0, C):
                cls = tl.zeros_like(rows) + c
                ph = class_rows_of(ph_ptr, rows, cls, B, C, n, k)                     # (BLOCK_B, BLOCK_N)
                du = projected_rows(dg_ptr, hw_ptr, p_rnorm_ptr, ph, rows, cls, B, C, n, k).to(kh.dtype)
                cosT = tl.dot(kh, tl.trans(ph), input_precision=PRECISION, out_dtype=tau.dtype)
                lT = tau * cosT
                pT = tl.exp(lT - mT)
                xT = tl.dot(kh, tl.trans(du), input_precision=PRECISION, out_dtype=tau.dtype)
                v = tl.load(v_ptrs, mask=cols < S, other=0.0)
                spT = sigma[:, None] * pT
                wdT = wT * tau * (spT - v[:, None])                                  # w_ij delta_ijc
                dlT = wT * (tau * spT * (xT - rdotT) + dL[None, :] * (spT - v[:, None]))
                dkh = tl.dot(wdT.to(kh.dtype), du, dkh, input_precision=PRECISION, out_dtype=tau.dtype)
                dkh = tl.dot((tau * dlT).to(kh.dtype), ph, dkh, input_precision=PRECISION, out_dtype=tau.dtype)
                dtau += tl.sum(dlT * cosT, axis=1)                                 # dl l / tau, finite at tau 0
                dv = tl.sum(wT * (tau * (rdotT - xT) - dL[None, :] * (lT - mT)), axis=1)
                if b0 > 0:
                    dv += tl.load(dv_ptrs, mask=cols < S, other=0.0)
                tl.store(dv_ptrs, dv, mask=cols < S)
                dv_ptrs += S
                v_ptrs += S
            # The read-add-writes of dv are re-read by other threads of this program at the next query block.
            tl.debug_barrier()
        tl.store(dkh_ptr + cols[:, None].to(tl.int64) * n + k[None, :], dkh,
                 mask=(cols[:, None] < S) & (k[None, :] < n))
    tl.store(dtau_part_ptr + pid, tl.sum(dtau, axis=0))
