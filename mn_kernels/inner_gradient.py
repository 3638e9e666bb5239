"""
Fused inner gradient of Meta-Neighborhoods (cosine attention over a dictionary, cosine classifier)
=================================================================================================

Hats are row-normalised vectors, ``xh = x / max(||x||, 1e-12)``. Queries ``z`` (B x n), dictionary
keys ``k`` (S x n) and values ``v`` (S x C, rows are probabilities), classifier weight ``W`` (C x n),
temperature ``tau`` (scalar), attention sharpness ``gamma`` (float).

Forward::

    s_ij     = gamma * zh_i . kh_j                      attention scores        (B x S, never stored)
    w_ij     = exp(s_ij - lse_i)                        softmax over the entries j kept for query i
    l_jc     = tau * kh_j . wh_c,  p_j = softmax_c(l_j) per entry, O(S C n)
    ce_j     = -sum_c v_jc log p_jc,  delta_jc = tau * (p_jc - v_jc)
    U_ic     = sum_j w_ij delta_jc kh_j                 THE contraction, 2 B S C n flops
    loss_i   = sum_j w_ij ce_j
    grad_ic  = P_c U_ic,  P_c = (I - wh_c wh_c^T) / ||w_c||

Backward, given dg (B x C x n) and dL (B)::

    dU_ic    = P_c dg_ic
    X_icj    = dU_ic . kh_j                             recomputed tile by tile, never stored
    dw_ij    = sum_c delta_jc X_icj + dL_i ce_j
    D_i      = sum_j w_ij dw_ij = <grad_i, dg_i> + dL_i loss_i     (P_c is symmetric)
    ds_ij    = w_ij (dw_ij - D_i)
    ddelta_jc = sum_i w_ij X_icj         dce_j = sum_i w_ij dL_i
    dkh_j    = sum_i sum_c w_ij delta_jc dU_ic + gamma sum_i ds_ij zh_i
    dzh_i    = gamma sum_j ds_ij kh_j
    dW_c    += -(1/||w_c||) sum_i [(dg_ic . grad_ic) wh_c + (wh_c . dg_ic) grad_ic + a_ic dU_ic]
               with a_ic = wh_c . U_ic = sum_j w_ij delta_jc (kh_j . wh_c)      (the P_c term)

followed by the per-entry softmax/CE backward (O(S C n)) and the normalisation backward
``dx = (dxh - xh (xh . dxh)) / ||x||``.  Only the contraction and the X terms cost O(B S C n); they run
in the three kernels below, flash-attention style: nothing of size B x S, B x S x C, S x C x n or
B x S x n is ever materialised. Nor is any B x C x n tensor besides grad and dg (dU is formed per tile),
or a normalised copy of the keys (the kernels normalise key tiles as they load them, from ``1/||k_j||``).
The forward hands the backward ``lse``, ``a`` and its preparation (row norms, delta, ce: ``_Setup``).

* ``_lse_kernel``  grid (query block, entry split): online (running max) log-sum-exp of the scores;
                    the splits are combined on the host. Knowing ``lse`` exactly before the main pass
                    makes the weights final (``exp(s - lse)``) in every later kernel, so partial sums
                    need no rescaling and any gamma is safe.
* ``_fwd_kernel``  grid (query block, class block of BLOCK_C = 2..4), loop over entry tiles:
                    ``A = w (x) delta`` as a (BLOCK_B*BLOCK_C) x BLOCK_S tile, ``U += A @ kh_tile``;
                    epilogue projects with P_c and stores grad; loss from the class-block-0 programs.
* ``_bwd_kernel``  grid P programs (at most one per SM), each owning a contiguous group of entry tiles
                    (like flash-attention-2's dk/dv kernel); entry-major tiles; per tile, loop over query
                    blocks and, inside, over every class: ``X_c^T = kh dU_c^T``, from which ``ddelta``,
                    ``dkh`` (both terms), ``dce`` of the tile, and -- since the full ``ds_ij`` of the
                    (query block, tile) is on chip -- the program's partial ``dzh_i += ds_ij kh_j``.
                    The host sums the P partials in fixed order (deterministic, no atomics). A separate
                    dq-style kernel for dzh would recompute X (one more contraction) and the scores.
                    ``a_ic = wh_c . U_ic`` of the projection term comes from the forward (B x C).

Flops per step, in units of the contraction 2 B S C n (the scores, ds @ kh and ds^T @ zh add 2 B S n
each, i.e. 1/C): forward 1 + 1/BLOCK_C (scores once per class block); backward 2 (X and A^T @ dU).

Entry dropout: entry j is dropped for query i iff ``(h(seed, i, j) >> 8) < p * 2^24`` with the murmur-like
uint32 hash of DESIGN.md section 5; dropped entries get zero weight and leave the normaliser; a query with
every entry dropped has ``lse = -inf``, zero weights, zero grad and zero loss.

Dtypes: float32 / bfloat16 / float16 inputs use their own dtype as ``tl.dot`` operands and float32
accumulators; float64 inputs compute in float64. fp32 dots follow ``torch.get_float32_matmul_precision()``.
Every ``tl.dot`` into an accumulator names ``out_dtype`` (the accumulator's): Triton <= 3.6 defaults it to
float32 and rejects a float64 accumulator otherwise (the interpreter of later versions accepts it).
Per-entry arrays (delta, ddelta) are class-major, C x S, as the kernels read them: no transposes.
Feature rows are whole in a tile (BLOCK_N >= n): n <= ``max_features(dtype)`` (1024; float64 512).
"""
import math
import os

import torch
import triton
import triton.language as tl

from mn.reference._common import normalize_rows, normalize_rows_bwd, row_rnorm

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
# MN_AUTOTUNE=0 keeps the first candidate of each kernel: for test runs, where tuning every new shape would
# cost more compile time than the tests themselves.
_AUTOTUNE = os.environ.get("MN_AUTOTUNE", "1") != "0"


def dot_precision(dtype: torch.dtype) -> str:
    """``tl.dot`` input precision for operands of ``dtype``: fp32 follows PyTorch's matmul precision."""
    if dtype == torch.float32 and torch.get_float32_matmul_precision() != "highest":
        return "tf32"
    return "ieee"


def _autotune(names, candidates, small):
    """``triton.autotune`` over ``candidates`` then ``small`` (tuples of the meta-parameters ``names``, then
    num_warps and num_stages), keyed by ``_KEY``. ``small`` fits shared memory up to the largest feature
    dimension (``max_features``): the tuner falls back to it where the candidates exceed shared memory (large
    n; it skips those), and float64 inputs, whose tiles are twice the bytes, get it alone. With
    MN_AUTOTUNE=0 the first candidate is the only one up to n = 256, ``small`` beyond it and for float64.
    The interpreter gets one small config (tuning there only costs time); ``gpu_configs`` on the kernel keeps
    the GPU's list either way."""
    def config(c):
        return triton.Config(dict(zip(names, c[:-2])), num_warps=c[-2], num_stages=c[-1])

    def prune(configs, named_args, **kwargs):
        if named_args["zh_ptr"].dtype == torch.float64:
            return configs[-1:]
        if _AUTOTUNE:
            return configs
        return configs[:1] if named_args["n"] <= 256 else configs[-1:]      # the first fits up to n = 256

    gpu_configs = [config(c) for c in candidates] + [config(small)]
    if _INTERPRET:
        tiny = {"BLOCK_B": 16, "BLOCK_C": 4, "BLOCK_S": 16}
        tune = triton.autotune(configs=[triton.Config({k: tiny[k] for k in names}, num_warps=1, num_stages=1)],
                               key=_KEY)
    else:
        tune = triton.autotune(configs=gpu_configs, key=_KEY, prune_configs_by={"early_config_prune": prune})

    def decorate(kernel):
        tuner = tune(kernel)
        tuner.gpu_configs = gpu_configs    # bench/ tools size GPU grids and compile GPU configs from it
        return tuner
    return decorate


def max_features(dtype: torch.dtype) -> int:
    """The largest n the kernels take for inputs of `dtype`: they hold whole feature rows in a tile (BLOCK_N
    = next power of two >= n), and their ``small`` configs fit an H100's shared memory up to 4 KiB rows in the
    compute dtype (tests/test_sm90_compile.py): n <= 1024 (fp32, bf16, fp16), n <= 512 (fp64)."""
    return 512 if dtype == torch.float64 else 1024


# Chosen from offline sm_90 compiles at n = 256 (bench/sm90_resources.py: ptxas register/spill counts,
# shared memory within 227 KiB), best first. The (BLOCK_B*BLOCK_C) x n accumulator is what spills:
# BLOCK_C = 4 with 8 warps keeps it at 64 fp32 registers per thread at n = 256 (no spills), and doubles the
# class-block grid axis (C = 100: 8 x 25 = 200 programs for 132 SMs instead of 104) for the price of
# recomputing the scores once per 4 classes (1/4 of the contraction's flops; with 16 queries that dot is
# mma.sync, the contraction wgmma). The last candidate puts every dot on wgmma (64 queries, one class:
# the scores cost as much as the contraction) and spills 20 bytes with bf16 operands; with fp32 operands
# it exceeds shared memory and the tuner skips it.
_LSE_NAMES = ("BLOCK_B", "BLOCK_S")
_LSE_CONFIGS = [(32, 64, 8, 3), (16, 64, 4, 3), (64, 64, 8, 2)]
_LSE_SMALL = (16, 16, 4, 1)
_FWD_NAMES = ("BLOCK_B", "BLOCK_C", "BLOCK_S")
_FWD_CONFIGS = [(16, 4, 64, 8, 3), (16, 4, 64, 8, 2), (32, 2, 64, 8, 2), (64, 1, 128, 8, 2)]
_FWD_SMALL = (16, 1, 16, 4, 1)
# Backward (bench/sm90_resources.py at 128,10000,100,256; bench/results/sm90-static.md): BLOCK_S = 64
# entries is the M side of both per-class dots, the smallest that Hopper's warpgroup MMA (wgmma) takes; with
# 8 warps both run on wgmma, and only the (BLOCK_B x n) dzh dot stays on mma.sync (1/C of the flops).
# ptxas spills (fp32 / bf16 operands): 664 / 40 bytes with 32-query blocks, 136 / 0 with 16; 64-query blocks
# spill 0.2-1 KiB. fp32 operands need 224 KiB of shared memory at num_stages = 1 (kh is kept in both wgmma
# operand orders); 2 stages exceed it at fp32 and the tuner skips them there. The launcher sizes the grid
# with the largest BLOCK_S of the list, so that every program gets a tile whichever config runs.
_BWD_NAMES = ("BLOCK_B", "BLOCK_S")
_BWD_CONFIGS = [(32, 64, 8, 1), (32, 64, 8, 2), (16, 64, 8, 1)]
_BWD_SMALL = (16, 16, 8, 1)
# The *_SMALL configs keep the kernels running where the candidates do not fit: n up to 1024 with fp32
# operands (96, 160 and 193 KiB of shared memory at n = 1024) and float64 up to n = 512 (the GPU's
# verification runs). They spill (the fp64 backward about 7 KiB per thread): correctness, not speed.


# Autotune keys: a power-of-two bucket of S, C and n -- never B, so batch-size changes reuse the tuning; B is
# also exempt from Triton's integer specialisation (B % 16, B == 1), so no batch size triggers a recompile.
_KEY = ["s_bucket", "C", "n"]


# ----------------------------------------------------------------------------------------------------
# Shared pieces
# ----------------------------------------------------------------------------------------------------
@triton.jit
def _keep_mask(q, e, B, S, seed_mix, drop_threshold, HAS_DROPOUT: tl.constexpr):
    """Keep mask of a tile: query q < B, entry e < S, and entry e not dropped for query q. ``q`` and ``e``
    are index tensors that broadcast to the tile (``rows[:, None], cols[None, :]`` for a query-major tile,
    ``rows[None, :], cols[:, None]`` for an entry-major one).

    ``seed_mix = seed * 0x9E3779B1 mod 2^32`` comes from the host as int32 bits; all hash arithmetic is
    uint32 (wrap-around multiply), exactly the DESIGN.md section 5 hash."""
    keep = (q < B) & (e < S)
    if HAS_DROPOUT:
        x = (seed_mix.to(tl.uint32, bitcast=True)
             ^ (q.to(tl.uint32) * 0x85EBCA77)
             ^ (e.to(tl.uint32) * 0xC2B2AE3D))
        x ^= x >> 16
        x *= 0x85EBCA6B
        x ^= x >> 13
        x *= 0xC2B2AE35
        x ^= x >> 16
        keep &= (x >> 8).to(tl.int32) >= drop_threshold
    return keep


@triton.jit
def _key_tile(keys_ptr, k_rnorm_ptr, cols, k, S, n):
    """Normalised keys ``kh_j = k_j / max(||k_j||, eps)`` of entries ``cols`` (< S), (BLOCK_S, BLOCK_N) in the
    compute dtype of ``k_rnorm``: the host passes the raw keys and their reciprocal norms, so no normalised
    S x n copy of the dictionary is ever stored. Padding rows and columns are 0."""
    keys = tl.load(keys_ptr + cols[:, None].to(tl.int64) * n + k[None, :],
                   mask=(cols[:, None] < S) & (k[None, :] < n), other=0.0)
    rnorm = tl.load(k_rnorm_ptr + cols, mask=cols < S, other=0.0)
    return keys.to(rnorm.dtype) * rnorm[:, None]


@triton.jit
def _attention(zh, kh, lse, keep, PRECISION: tl.constexpr):
    """Final attention weights of one (query block, entry tile): ``w = exp(zh kh^T - lse)``, where the
    host has folded gamma into the query operand (``zh`` here is ``gamma * zh``: no fp32 scalar argument
    can then limit float64 accuracy).

    Masked entries (dropped, padding, or a query whose lse is -inf) give exactly 0 and no NaN:
    ``tl.where`` discards the ``exp(+inf)`` of the masked lanes."""
    s = tl.dot(zh, tl.trans(kh), input_precision=PRECISION)
    return tl.where(keep, tl.exp(s - lse[:, None]), 0.0)


@triton.jit
def _class_rows(pid_b, pid_c, B, C, BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr):
    """The (query, class) pairs of a (BLOCK_B*BLOCK_C)-row tile, row r = i_local * BLOCK_C + c_local,
    the row order of ``reshape((BLOCK_B, BLOCK_C, X), (BLOCK_B * BLOCK_C, X))``."""
    r = tl.arange(0, BLOCK_B * BLOCK_C)
    i = pid_b * BLOCK_B + r // BLOCK_C
    c = pid_c * BLOCK_C + r % BLOCK_C
    return i, c, (i < B) & (c < C)


# ----------------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------------
@_autotune(_LSE_NAMES, _LSE_CONFIGS, _LSE_SMALL)
@triton.jit(do_not_specialize=["B", "seed_mix", "drop_threshold"])
def _lse_kernel(zh_ptr, keys_ptr, k_rnorm_ptr, m_ptr, l_ptr,
                B, S, C, n, seed_mix, drop_threshold, entries_per_split, s_bucket,
                BLOCK_B: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_N: tl.constexpr,
                HAS_DROPOUT: tl.constexpr, PRECISION: tl.constexpr):
    """Partial (running max m, sum l) of the scores of one query block over one split of the entries.

    The split axis exists for parallelism only (B / BLOCK_B programs alone would idle the GPU); the host
    combines the splits with a log-sum-exp in fixed order."""
    pid_b = tl.program_id(0)
    pid_s = tl.program_id(1)
    rows = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    k = tl.arange(0, BLOCK_N)
    zh = tl.load(zh_ptr + rows[:, None].to(tl.int64) * n + k[None, :],
                 mask=(rows[:, None] < B) & (k[None, :] < n), other=0.0)
    # m starts finite (far below any score, |s| <= gamma) so that a tile whose entries are all dropped
    # gives exp(m - m_new) = 1 rather than exp(-inf + inf) = NaN; l stays 0 for such a query.
    m_i = tl.full([BLOCK_B], -1.0e30, dtype=tl.float32).to(m_ptr.dtype.element_ty)
    l_i = tl.zeros([BLOCK_B], dtype=m_ptr.dtype.element_ty)
    start = pid_s * entries_per_split
    end = tl.minimum(start + entries_per_split, S)
    for j0 in range(start, end, BLOCK_S):
        cols = j0 + tl.arange(0, BLOCK_S)
        kh = _key_tile(keys_ptr, k_rnorm_ptr, cols, k, end, n).to(zh.dtype)
        keep = _keep_mask(rows[:, None], cols[None, :], B, end, seed_mix, drop_threshold, HAS_DROPOUT)
        s = tl.dot(zh, tl.trans(kh), input_precision=PRECISION)
        s = tl.where(keep, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        l_i = l_i * tl.exp(m_i - m_new) + tl.sum(tl.exp(s - m_new[:, None]), axis=1)
        m_i = m_new
    out = pid_s * B + rows
    tl.store(m_ptr + out, m_i, mask=rows < B)
    tl.store(l_ptr + out, l_i, mask=rows < B)


@_autotune(_FWD_NAMES, _FWD_CONFIGS, _FWD_SMALL)
@triton.jit(do_not_specialize=["B", "seed_mix", "drop_threshold"])
def _fwd_kernel(zh_ptr, keys_ptr, k_rnorm_ptr, deltaT_ptr, ce_ptr, lse_ptr, wh_ptr, w_rnorm_ptr,
                grad_ptr, loss_ptr, a_ptr,
                B, S, C, n, seed_mix, drop_threshold, s_bucket,
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
    zh = tl.load(zh_ptr + rows[:, None].to(tl.int64) * n + k[None, :],
                 mask=(rows[:, None] < B) & (k[None, :] < n), other=0.0)
    lse = tl.load(lse_ptr + rows, mask=rows < B, other=float("-inf"))

    acc = tl.zeros([BLOCK_B * BLOCK_C, BLOCK_N], dtype=acc_ty)
    loss = tl.zeros([BLOCK_B], dtype=acc_ty)
    for j0 in range(0, S, BLOCK_S):
        cols = j0 + tl.arange(0, BLOCK_S)
        kh = _key_tile(keys_ptr, k_rnorm_ptr, cols, k, S, n).to(zh.dtype)
        keep = _keep_mask(rows[:, None], cols[None, :], B, S, seed_mix, drop_threshold, HAS_DROPOUT)
        w = _attention(zh, kh, lse, keep, PRECISION)
        delta = tl.load(deltaT_ptr + cls[:, None].to(tl.int64) * S + cols[None, :],
                        mask=(cls[:, None] < C) & (cols[None, :] < S), other=0.0)
        # A[(i, c), j] = w_ij delta_jc, the left operand of the contraction over the entry tile.
        a = tl.reshape(w[:, None, :] * delta[None, :, :], (BLOCK_B * BLOCK_C, BLOCK_S))
        acc = tl.dot(a.to(kh.dtype), kh, acc, input_precision=PRECISION, out_dtype=acc_ty)
        ce = tl.load(ce_ptr + cols, mask=cols < S, other=0.0)
        loss += tl.sum(w * ce[None, :], axis=1)

    # Epilogue: grad = (U - wh_c (wh_c . U)) / ||w_c||, one row per (query, class).
    i, c, valid = _class_rows(pid_b, pid_c, B, C, BLOCK_B, BLOCK_C)
    wh = tl.load(wh_ptr + c[:, None] * n + k[None, :], mask=(c[:, None] < C) & (k[None, :] < n), other=0.0)
    rnorm = tl.load(w_rnorm_ptr + c, mask=c < C, other=0.0)
    u_par = tl.sum(acc * wh, axis=1)
    grad = (acc - u_par[:, None] * wh) * rnorm[:, None]
    tl.store(grad_ptr + (i[:, None].to(tl.int64) * C + c[:, None]) * n + k[None, :],
             grad.to(grad_ptr.dtype.element_ty), mask=valid[:, None] & (k[None, :] < n))
    tl.store(a_ptr + i.to(tl.int64) * C + c, u_par, mask=valid)
    if pid_c == 0:
        tl.store(loss_ptr + rows, loss.to(loss_ptr.dtype.element_ty), mask=rows < B)


@_autotune(_BWD_NAMES, _BWD_CONFIGS, _BWD_SMALL)
@triton.jit(do_not_specialize=["B", "seed_mix", "drop_threshold"])
def _bwd_kernel(zh_ptr, keys_ptr, k_rnorm_ptr, deltaT_ptr, ce_ptr, lse_ptr, h_ptr, hw_ptr, wh_ptr, w_rnorm_ptr,
                dL_ptr, D_ptr,
                dkh_ptr, dce_ptr, ddeltaT_ptr, dzh_part_ptr,
                B, S, C, n, seed_mix, drop_threshold, s_bucket,
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
        kh = _key_tile(keys_ptr, k_rnorm_ptr, cols, k, S, n).to(zh_ptr.dtype.element_ty)
        ce = tl.load(ce_ptr + cols, mask=cols < S, other=0.0)
        dkh = tl.zeros([BLOCK_S, BLOCK_N], dtype=acc_ty)
        dce = tl.zeros([BLOCK_S], dtype=acc_ty)
        for b0 in range(0, B, BLOCK_B):
            rows = b0 + tl.arange(0, BLOCK_B)
            zh = tl.load(zh_ptr + rows[:, None].to(tl.int64) * n + k[None, :],
                         mask=(rows[:, None] < B) & (k[None, :] < n), other=0.0)
            lse = tl.load(lse_ptr + rows, mask=rows < B, other=float("-inf"))
            dL = tl.load(dL_ptr + rows, mask=rows < B, other=0.0)
            D = tl.load(D_ptr + rows, mask=rows < B, other=0.0)
            keep = _keep_mask(rows[None, :], cols[:, None], B, S, seed_mix, drop_threshold, HAS_DROPOUT)
            sT = tl.dot(kh, tl.trans(zh), input_precision=PRECISION)               # (BLOCK_S, BLOCK_B)
            wT = tl.where(keep, tl.exp(sT - lse[None, :]), 0.0)                    # w_ij, entry-major

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


# ----------------------------------------------------------------------------------------------------
# Host side
# ----------------------------------------------------------------------------------------------------
def _hash_args(B, entry_dropout, seed):
    """(HAS_DROPOUT, seed_mix as int32 bits, integer threshold): y < p * 2^24 <=> y < ceil(p * 2^24)."""
    if not 0.0 <= entry_dropout <= 1.0:
        raise ValueError(f"entry_dropout must be in [0, 1], got {entry_dropout}")
    mix = (int(seed) * 0x9E3779B1) & 0xFFFFFFFF
    mix = mix - (1 << 32) if mix >= (1 << 31) else mix
    threshold = math.ceil(entry_dropout * (1 << 24))
    if B >= 2**31:
        raise ValueError("batch too large for the int32 query index of the dropout hash")
    return threshold > 0, mix, threshold


def multiprocessors(device: torch.device) -> int | None:
    """The SM count that the launch grids fill: the GPU's, or None in the interpreter (CPU), where the
    launchers use a few programs to exercise their multi-program paths. bench/step_memory.py replaces it to
    size the grids of a GPU while counting the launchers' allocations on the CPU."""
    if _INTERPRET or device.type != "cuda":
        return None
    return torch.cuda.get_device_properties(device).multi_processor_count


class _Setup:
    """Per-call preparation shared by forward and backward: row norms, per-entry delta and ce, launch constants.

    The forward computes the tensors of ``SAVED`` and returns them (``saved()``); the backward takes them back
    (``saved=``) instead of recomputing them: O(B n + C n + S C) memory between the two, and the backward's
    host work shrinks by the normalisations and the per-entry softmax."""

    SAVED = ("zs_op", "z_rnorm", "z_clamped", "wh", "w_rnorm", "w_clamped", "k_rnorm", "k_clamped", "sigma", "ce",
             "deltaT")

    def __init__(self, z, keys, values, weight, tau, gamma, entry_dropout, seed, saved=None):
        for name, t in (("keys", keys), ("values", values), ("weight", weight), ("tau", tau)):
            if t.dtype != z.dtype or t.device != z.device:
                raise ValueError(f"{name} must have z's dtype {z.dtype} and device {z.device}, "
                                 f"got {t.dtype} on {t.device}")
        (B, n), (S, C) = z.shape, values.shape
        if keys.shape != (S, n) or weight.shape != (C, n) or tau.dim() != 0:
            raise ValueError(f"expected keys {(S, n)}, weight {(C, n)}, 0-d tau; got {tuple(keys.shape)}, "
                             f"{tuple(weight.shape)}, {tuple(tau.shape)}")
        if n > max_features(z.dtype):
            raise ValueError(f"z has n = {n} features; the Triton kernels take n <= {max_features(z.dtype)} "
                             f"with {z.dtype} inputs (whole feature rows per tile)")
        self.B, self.S, self.C, self.n = B, S, C, n
        self.dtype = z.dtype
        ct = torch.float64 if z.dtype == torch.float64 else torch.float32  # compute / accumulate dtype
        self.ct = ct
        self.gamma = float(gamma)
        self.tau = tau.to(ct)
        # Keys stay raw: the kernels normalise each tile as they load it (no S x n copy of the dictionary).
        self.keys = keys.contiguous()
        # Per-entry quantities are kept class-major (C x S, "T" = transposed), the layout the kernels read
        # (contiguous entry tiles per class) and the one the matmul produces: no transposed copies.
        self.vT = values.to(ct).t()                                       # a view
        # Dot operands in the input dtype (bf16/fp16 tensor cores); side data in the compute dtype.
        # The interpreter (triton 3.9) computes bfloat16 tl.dot wrongly, so there bf16 operands go as fp32.
        self.op_dtype = torch.float32 if _INTERPRET and z.dtype == torch.bfloat16 else z.dtype
        if saved is not None:
            if len(saved) != len(self.SAVED):
                raise ValueError(f"expected the forward's {len(self.SAVED)} saved tensors, got {len(saved)}")
            for name, t in zip(self.SAVED, saved):
                setattr(self, name, t)
        else:
            self._prepare(z, weight)
        self.has_dropout, self.seed_mix, self.threshold = _hash_args(B, entry_dropout, seed)
        self.precision = dot_precision(z.dtype)
        self.block_n = max(16, triton.next_power_of_2(n))
        self.consts = dict(seed_mix=self.seed_mix, drop_threshold=self.threshold,
                           s_bucket=triton.next_power_of_2(S))
        self.meta = dict(BLOCK_N=self.block_n, HAS_DROPOUT=self.has_dropout, PRECISION=self.precision)

    def _prepare(self, z, weight):
        ct = self.ct
        zh, self.z_rnorm, self.z_clamped = normalize_rows(z.to(ct))
        # gamma is folded into the query operand: the kernels see scores zs . kh = gamma zh . kh.
        self.zs_op = (self.gamma * zh).to(self.op_dtype).contiguous()
        self.k_rnorm, self.k_clamped = row_rnorm(self.keys, ct)
        self.wh, self.w_rnorm, self.w_clamped = normalize_rows(weight.to(ct))
        # d ce / d l = sigma p - v with sigma = sum_c v (= 1 for probabilities): the exact derivative
        # also off the simplex, so that the backward matches autograd for any values.
        self.sigma = self.vT.sum(0, keepdim=True)                         # (1, S)
        # Only what the kernels read is kept (ce, delta); the backward recomputes log p and p after its
        # kernel (one C x n x S product) instead of holding two more C x S arrays through it.
        logpT, pT = self.entry_softmax()
        self.ce = -torch.einsum("cs,cs->s", self.vT, logpT)
        del logpT
        self.deltaT = pT.mul_(self.sigma).sub_(self.vT).mul_(self.tau)   # tau (sigma p - v), in p's buffer

    def saved(self) -> list:
        """The tensors the backward takes back (``SAVED``, in order)."""
        return [getattr(self, name) for name in self.SAVED]

    def entry_softmax(self):
        """Per entry, class-major (C x S): log p_j = log_softmax_c(tau cos_j) with cos_jc = kh_j . wh_c, and p_j."""
        logitsT = (self.wh @ self.keys.t().to(self.ct)).mul_(self.k_rnorm.t() * self.tau)
        logpT = torch.log_softmax(logitsT, dim=0)
        del logitsT
        return logpT, logpT.exp()

    def lse(self):
        B, S = self.B, self.S
        # Enough entry splits to give every SM work; each split a multiple of the largest BLOCK_S.
        # (In the interpreter 2 splits exercise the split combine in the tests.)
        target = 2 * (multiprocessors(self.keys.device) or 1)
        splits = max(1, min(triton.cdiv(S, 128), target // triton.cdiv(B, 16)))
        per_split = triton.cdiv(triton.cdiv(S, splits), 128) * 128
        splits = triton.cdiv(S, per_split)
        m = torch.empty(splits, B, device=self.keys.device, dtype=self.ct)
        l = torch.empty_like(m)
        grid = lambda meta: (triton.cdiv(B, meta["BLOCK_B"]), splits)
        _lse_kernel[grid](self.zs_op, self.keys, self.k_rnorm.reshape(S), m, l, B, S, self.C, self.n,
                          entries_per_split=per_split, **self.consts, **self.meta)
        return torch.logsumexp(m + l.log(), dim=0)  # l = 0 (all dropped) -> -inf, never NaN


def inner_gradient_fwd(z, keys, values, weight, tau, gamma: float, entry_dropout: float = 0.0, seed: int = 0):
    """z (B,n), keys (S,n), values (S,C) row-probabilities, weight (C,n), tau 0-d tensor (same device).

    Raw (un-normalised) inputs; all contiguous, same floating dtype and device.
    Returns, in the compute dtype (float32; float64 for float64 inputs), grad (B,C,n), inner_loss (B,), and
    what the backward needs besides them: lse (B,), the attention log-normaliser, a (B,C), a_ic = wh_c . U_ic,
    and the preparation (a list, ``_Setup.SAVED``; the query operand in the dot dtype)."""
    st = _Setup(z, keys, values, weight, tau, gamma, entry_dropout, seed)
    B, S, C, n = st.B, st.S, st.C, st.n
    lse = st.lse()
    # grad and loss in the compute dtype: the backward rebuilds D_i and the projection term from them, and
    # rounded to bf16 / fp16 they would lose all accuracy at a large gamma (docs/design.md, "Dtypes").
    grad = torch.empty(B, C, n, device=z.device, dtype=st.ct)
    loss = torch.empty(B, device=z.device, dtype=st.ct)
    a = torch.empty(B, C, device=z.device, dtype=st.ct)
    grid = lambda meta: (triton.cdiv(B, meta["BLOCK_B"]), triton.cdiv(C, meta["BLOCK_C"]))
    _fwd_kernel[grid](st.zs_op, st.keys, st.k_rnorm.reshape(S), st.deltaT, st.ce, lse, st.wh,
                      st.w_rnorm.reshape(C).contiguous(), grad, loss, a, B, S, C, n,
                      **st.consts, **st.meta)
    return grad, loss, lse, a, st.saved()


def inner_gradient_bwd(dgrad, dloss, z, keys, values, weight, tau, grad, inner_loss, lse, a, saved, gamma: float,
                       entry_dropout: float = 0.0, seed: int = 0):
    """dgrad (B,C,n), dloss (B,) in the compute dtype; z..tau as in the forward; grad, inner_loss, lse, a, saved:
    the forward's outputs.

    Returns (dz (B,n), dkeys (S,n), dvalues (S,C), dweight (C,n), dtau 0-d), each in its input's dtype."""
    st = _Setup(z, keys, values, weight, tau, gamma, entry_dropout, seed, saved=saved)
    B, S, C, n, ct = st.B, st.S, st.C, st.n, st.ct
    if dgrad.shape != (B, C, n) or grad.shape != (B, C, n) or dloss.shape != (B,) or inner_loss.shape != (B,) \
            or lse.shape != (B,) or a.shape != (B, C):
        raise ValueError(f"expected dgrad and grad {(B, C, n)}, dloss, inner_loss and lse {(B,)}, a {(B, C)}")
    # Written to allocate no B x C x n temporary with fp32 inputs (extra-memory budget): the kernel forms
    # dU = P_c dg tile by tile from dg itself, and every B x C x n contraction here is a batched product.
    hc, g, dL = dgrad.to(ct).contiguous(), grad.to(ct), dloss.to(ct).contiguous()
    wh, w_rnorm, a = st.wh, st.w_rnorm, a.to(ct)                          # (C, n), (C, 1), (B, C)
    # The kernel reads dg as a dot operand: in the input dtype (bf16 / fp16 halve its traffic; the upstream
    # gradient of a bf16 output holds no more bits than that).
    h = hc.to(st.op_dtype)
    hw = torch.einsum("bcn,cn->bc", hc, wh).contiguous()                # wh_c . dg_ic
    hg = torch.einsum("rk,rk->r", hc.reshape(-1, n), g.reshape(-1, n)).view(B, C)   # dg_ic . grad_ic
    D = hg.sum(1) + dL * inner_loss.to(ct)
    # The P_c term of the projection (u = ||w|| grad + a wh written out), summed over the batch, with
    # sum_i a_ic dU_ic = (sum_i a_ic dg_ic - (sum_i a_ic hw_ic) wh_c) / ||w_c||.
    dW_proj = -w_rnorm * (hg.sum(0)[:, None] * wh + torch.einsum("bc,bcn->cn", hw, g)
                          + w_rnorm * (torch.einsum("bc,bcn->cn", a, hc) - (a * hw).sum(0)[:, None] * wh))
    del g
    lse = lse.to(ct).contiguous()

    # P programs, each owning a contiguous group of entry tiles: the fewest programs that still give no SM
    # more than ceil(tiles / SMs) tiles (the kernel's time), since each one costs a B x n dzh partial.
    # Every program gets at least one tile (so that it writes its partial).
    # (In the interpreter 3 programs exercise multi-tile programs and the partial reduction in the tests.)
    target = multiprocessors(z.device) or 3
    tiles = triton.cdiv(S, max(config.kwargs["BLOCK_S"] for config in _bwd_kernel.configs))
    programs = triton.cdiv(tiles, triton.cdiv(tiles, target))
    dkh = torch.empty(S, n, device=z.device, dtype=ct)
    dce = torch.empty(S, device=z.device, dtype=ct)
    ddeltaT = torch.empty(C, S, device=z.device, dtype=ct)
    dzh_part = torch.empty(programs, B, n, device=z.device, dtype=ct)
    _bwd_kernel[(programs,)](st.zs_op, st.keys, st.k_rnorm.reshape(S), st.deltaT, st.ce, lse, h, hw, wh,
                             w_rnorm.reshape(C).contiguous(), dL, D, dkh, dce, ddeltaT, dzh_part, B, S, C, n,
                             **st.consts, **st.meta)
    dzh = st.gamma * dzh_part.sum(0)
    del dzh_part

    # Per entry, class-major like the forward: delta = tau (sigma p - v), ce = -sum v log p,
    # p = softmax(tau * cos); O(S C + S C n). In place where a C x S array is not needed again, so that at
    # most four are alive at once.
    tau_, v, sigma = st.tau, st.vT, st.sigma
    logpT, p = st.entry_softmax()
    dv = torch.empty(S, C, device=z.device, dtype=ct)                 # written through its transpose dvT
    dvT = torch.sub(torch.linalg.vecdot(p, ddeltaT, dim=0)[None, :], ddeltaT, out=dv.t()).mul_(tau_)
    dvT.addcmul_(dce[None, :].expand_as(logpT), logpT, value=-1)        # - dce log p
    del logpT
    q = torch.mul(p, sigma).sub_(v)                                     # sigma p - v
    dtau = torch.einsum("cs,cs->", q, ddeltaT)
    dp = ddeltaT.mul_(sigma).mul_(tau_)                                 # tau sigma ddelta, in ddelta's buffer
    dl = dp.sub_(torch.linalg.vecdot(p, dp, dim=0)[None, :]).mul_(p)      # p (dp - sum_c p dp), in place
    dl.addcmul_(dce[None, :].expand_as(q), q)                           # + dce (sigma p - v)
    del p, q
    dkh.addmm_(dl.t(), tau_ * wh)                                       # + tau dl^T wh
    dlk = dl.mul_(st.k_rnorm.t()) @ st.keys.to(ct)                      # sum_j dl_jc kh_j, kh = keys / ||keys||
    del dl
    dtau = dtau + (dlk * wh).sum()                                      # + sum_jc dl_jc cos_jc
    dwh = tau_ * dlk

    dz = normalize_rows_bwd(z.to(ct), st.z_rnorm, st.z_clamped, dzh)
    dkeys = normalize_rows_bwd(st.keys.to(ct), st.k_rnorm, st.k_clamped, dkh, out=dkh)
    dweight = normalize_rows_bwd(weight.to(ct), w_rnorm, st.w_clamped, dwh) + dW_proj
    dt = z.dtype
    return dz.to(dt), dkeys.to(dt), dv.to(dt), dweight.to(dt), dtau.to(dt)
