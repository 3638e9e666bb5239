"""Backward kernel of the inner gradient: every O(B S C n) term in one entry-major pass (the math:
mn_kernels/inner_gradient/__init__.py)."""
import triton
import triton.language as tl

from ..launching import autotune
from ..tiles import attention_t, keep_mask, key_tile, query_tile
from .configs import BWD_CONFIGS, BWD_NAMES, BWD_SMALL


@autotune(BWD_NAMES, BWD_CONFIGS, BWD_SMALL)
@triton.jit(do_not_specialize=["B", "drop_threshold"])
def bwd_kernel(zh_ptr, keys_ptr, k_rnorm_ptr, deltaT_ptr, ce_ptr, lse_ptr, h_ptr, hw_ptr, wh_ptr, w_rnorm_ptr,
               dL_ptr, D_ptr,
               dkh_ptr, dce_ptr, ddeltaT_ptr, dzh_part_ptr,
               B, S, C, n, seed_ptr, drop_threshold, s_bucket,
               BLOCK_B: tl.constexpr, BLOCK_S: tl.constexpr,
               BLOCK_N: tl.constexpr, HAS_DROPOUT: tl.constexpr, PRECISION: tl.constexpr):
    """The whole O(B S C n) backward for a contiguous group of entry tiles (grid: P programs, P <= number
    of tiles, so every program owns at least one tile).

    Entry-major, like the dk/dv kernel of flash-attention 2: every tile is (entries x queries), so that the
    two big products of each class -- ``X_c^T = kh dU_c^T`` and ``dkh += (w delta_c)^T dU_c`` -- are plain
    2-D dots with the entry tile as their M side, and no 3-D (query, class, entry) tensor is formed.
    ``dU_c = (dg_c - hw_c wh_c) / ||w_c||`` (``hw_ic = wh_c . dg_ic``) is formed from the incoming gradient
    ``h = dg`` tile by tile, so no B x C x n dU is ever stored.
    Per entry tile, looping over query blocks and, inside, over every class:
    ``dkh`` (both terms), ``dce`` and ``ddelta`` of the tile, which the program owns outright; and this
    program's partial sum over its entries of ``dzh_i = sum_j ds_ij kh_j`` (gamma is applied on the host)
    in ``dzh_part[pid]``, which the host sums over programs in fixed order (deterministic, no atomics).

    ds_ij needs dw_ij summed over every class before it can multiply zh_i or kh_j, so the class loop is
    inside the query loop. ddelta (per entry tile and class) and the dzh partial (per query block) are
    revisited by this program only, as read-add-writes in global memory (L2): race-free and deterministic.
    The first visit writes without reading, so nothing needs zero-filling."""
    pid = tl.program_id(0)
    num_programs = tl.num_programs(0)
    acc_ty = ce_ptr.dtype.element_ty
    k = tl.arange(0, BLOCK_N)
    tiles = tl.cdiv(S, BLOCK_S)
    first_tile = pid * tiles // num_programs
    for t in range(first_tile, (pid + 1) * tiles // num_programs):
        cols = t * BLOCK_S + tl.arange(0, BLOCK_S)
        kh = key_tile(keys_ptr, k_rnorm_ptr, cols, k, S, n).to(zh_ptr.dtype.element_ty)
        ce = tl.load(ce_ptr + cols, mask=cols < S, other=0.0)
        dkh = tl.zeros([BLOCK_S, BLOCK_N], dtype=acc_ty)
        dce = tl.zeros([BLOCK_S], dtype=acc_ty)
        for b0 in range(0, B, BLOCK_B):
            rows = b0 + tl.arange(0, BLOCK_B)
            zh = query_tile(zh_ptr, rows, k, B, n)
            lse = tl.load(lse_ptr + rows, mask=rows < B, other=float("-inf"))
            dL = tl.load(dL_ptr + rows, mask=rows < B, other=0.0)
            D = tl.load(D_ptr + rows, mask=rows < B, other=0.0)
            keep = keep_mask(rows[None, :], cols[:, None], B, S, seed_ptr, drop_threshold, HAS_DROPOUT)
            wT = attention_t(zh, kh, lse, keep, PRECISION)                         # w_ij, (BLOCK_S, BLOCK_B)

            rT = tl.zeros([BLOCK_S, BLOCK_B], dtype=acc_ty)                         # sum_c w_ij delta_jc X_icj
            # Class c's rows of delta and ddelta (C x S): pointers advanced by S per class, in 64-bit
            # pointer arithmetic (c * S may pass 2^31).
            delta_ptrs = deltaT_ptr + cols
            dd_ptrs = ddeltaT_ptr + cols
            for c in range(0, C):
                h = tl.load(h_ptr + (rows[:, None].to(tl.int64) * C + c) * n + k[None, :],
                            mask=(rows[:, None] < B) & (k[None, :] < n), other=0.0).to(acc_ty)
                hw = tl.load(hw_ptr + rows.to(tl.int64) * C + c, mask=rows < B, other=0.0)
                wh = tl.load(wh_ptr + c * n + k, mask=k < n, other=0.0)
                dU = ((h - hw[:, None] * wh[None, :]) * tl.load(w_rnorm_ptr + c)).to(zh.dtype)   # P_c dg_ic
                delta = tl.load(delta_ptrs, mask=cols < S, other=0.0)
                xT = tl.dot(kh, tl.trans(dU), input_precision=PRECISION)           # X_icj = dU_ic . kh_j
                wx = wT * xT
                rT += wx * delta[:, None]
                # ddelta_jc += sum_i w_ij X_icj (first query block: plain write).
                dd = tl.sum(wx, axis=1)
                if b0 > 0:
                    dd += tl.load(dd_ptrs, mask=cols < S, other=0.0)
                tl.store(dd_ptrs, dd, mask=cols < S)
                # dkh_j += sum_i w_ij delta_jc dU_ic: the forward's contraction, transposed.
                wd = (wT * delta[:, None]).to(dU.dtype)
                dkh = tl.dot(wd, dU, dkh, input_precision=PRECISION, out_dtype=acc_ty)
                delta_ptrs += S
                dd_ptrs += S

            dsT = rT + wT * (ce[:, None] * dL[None, :] - D[None, :])
            # zh here is gamma zh, so this is the gamma sum_i ds_ij zh_i term.
            dkh = tl.dot(dsT.to(zh.dtype), zh, dkh, input_precision=PRECISION, out_dtype=acc_ty)
            dce += tl.sum(wT * dL[None, :], axis=1)
            # dzh_i += sum_{j in tile} ds_ij kh_j (first tile of this program: plain write).
            dz_ptrs = dzh_part_ptr + (pid * B + rows)[:, None].to(tl.int64) * n + k[None, :]
            dz_mask = (rows[:, None] < B) & (k[None, :] < n)
            dz = tl.zeros([BLOCK_B, BLOCK_N], dtype=acc_ty)
            if t > first_tile:
                dz = tl.load(dz_ptrs, mask=dz_mask, other=0.0)
            dz = tl.dot(tl.trans(dsT).to(kh.dtype), kh, dz, input_precision=PRECISION, out_dtype=acc_ty)
            tl.store(dz_ptrs, dz, mask=dz_mask)
            # The read-add-writes above are re-read by other threads of this program (ddelta at the next
            # query block, the partials at the next tile): make the stores visible first.
            tl.debug_barrier()

        tl.store(dkh_ptr + cols[:, None].to(tl.int64) * n + k[None, :], dkh,
                 mask=(cols[:, None] < S) & (k[None, :] < n))
        tl.store(dce_ptr + cols, dce, mask=cols < S)
