"""Tile-level pieces the Triton kernels share: the dropout keep mask, a normalised key tile, attention weights
from a known log-normaliser (query- or entry-major), the (query, class) rows of a flattened tile, and the
projected gradient's store."""
import triton
import triton.language as tl

from . import dropout

# The hash constants of mn_kernels.dropout, as compile-time constants of the kernels.
ROW_MUL = tl.constexpr(dropout.ROW_MUL)
COL_MUL = tl.constexpr(dropout.COL_MUL)
MIX1 = tl.constexpr(dropout.MIX1)
MIX2 = tl.constexpr(dropout.MIX2)


@triton.jit
def keep_mask(q, e, B, S, seed_ptr, drop_threshold, HAS_DROPOUT: tl.constexpr):
    """Keep mask of a tile: query q < B, entry e < S, and entry e not dropped for query q. ``q`` and ``e``
    are index tensors that broadcast to the tile (``rows[:, None], cols[None, :]`` for a query-major tile,
    ``rows[None, :], cols[:, None]`` for an entry-major one).

    ``seed_ptr`` points at ``seed * SEED_MUL mod 2^32`` (an int64 the host computed on the device,
    ``mn_kernels.dropout.seed_mix_tensor``): read from memory, so no host value enters the launch. All hash
    arithmetic is uint32 (wrap-around multiply), exactly the hash of ``mn_kernels.dropout``."""
    keep = (q < B) & (e < S)
    if HAS_DROPOUT:
        x = (tl.load(seed_ptr).to(tl.uint32)
             ^ (q.to(tl.uint32) * ROW_MUL)
             ^ (e.to(tl.uint32) * COL_MUL))
        x ^= x >> 16
        x *= MIX1
        x ^= x >> 13
        x *= MIX2
        x ^= x >> 16
        keep &= (x >> 8).to(tl.int32) >= drop_threshold
    return keep


@triton.jit
def query_tile(zh_ptr, rows, k, B, n):
    """Rows ``rows`` (< B) of the query operand (B, n), (BLOCK_B, BLOCK_N); padding rows and columns are 0."""
    return tl.load(zh_ptr + rows[:, None].to(tl.int64) * n + k[None, :], mask=(rows[:, None] < B) & (k[None, :] < n),
                   other=0.0)


@triton.jit
def key_tile(keys_ptr, k_rnorm_ptr, cols, k, S, n):
    """Normalised keys ``kh_j = k_j / max(||k_j||, eps)`` of entries ``cols`` (< S), (BLOCK_S, BLOCK_N) in the
    compute dtype of ``k_rnorm``: the host passes the raw keys and their reciprocal norms, so no normalised
    S x n copy of the dictionary is ever stored. Padding rows and columns are 0."""
    keys = tl.load(keys_ptr + cols[:, None].to(tl.int64) * n + k[None, :],
                   mask=(cols[:, None] < S) & (k[None, :] < n), other=0.0)
    rnorm = tl.load(k_rnorm_ptr + cols, mask=cols < S, other=0.0)
    return keys.to(rnorm.dtype) * rnorm[:, None]


@triton.jit
def attention(zh, kh, lse, keep, PRECISION: tl.constexpr):
    """Final attention weights of one (query block, entry tile): ``w = exp(zh kh^T - lse)``, where the
    host has folded gamma into the query operand (``zh`` here is ``gamma * zh``: no fp32 scalar argument
    can then limit float64 accuracy).

    Masked entries (dropped, padding, or a query whose lse is -inf) give exactly 0 and no NaN:
    ``tl.where`` discards the ``exp(+inf)`` of the masked lanes."""
    s = tl.dot(zh, tl.trans(kh), input_precision=PRECISION)
    return tl.where(keep, tl.exp(s - lse[:, None]), 0.0)


@triton.jit
def attention_t(zh, kh, lse, keep, PRECISION: tl.constexpr):
    """``attention`` entry-major: (BLOCK_S, BLOCK_B), for the backward kernels that walk the queries of an entry
    tile; ``keep`` from ``keep_mask(rows[None, :], cols[:, None], ...)``."""
    sT = tl.dot(kh, tl.trans(zh), input_precision=PRECISION)
    return tl.where(keep, tl.exp(sT - lse[None, :]), 0.0)


@triton.jit
def class_rows(pid_b, pid_c, B, C, BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr):
    """The (query, class) pairs of a (BLOCK_B*BLOCK_C)-row tile, row r = i_local * BLOCK_C + c_local,
    the row order of ``reshape((BLOCK_B, BLOCK_C, X), (BLOCK_B * BLOCK_C, X))``."""
    r = tl.arange(0, BLOCK_B * BLOCK_C)
    i = pid_b * BLOCK_B + r // BLOCK_C
    c = pid_c * BLOCK_C + r % BLOCK_C
    return i, c, (i < B) & (c < C)


@triton.jit
def store_projected(acc, h, rnorm, i, c, valid, k, C, n, grad_ptr, a_ptr):
    """The epilogue of the forward kernels: for rows (i, c) of U = ``acc`` (BLOCK_B*BLOCK_C, BLOCK_N), with h the
    rows' normalised weights (wh_c, or phh_ic in the later steps) and rnorm their reciprocal norms, stores
    grad = (U - h (h . U)) / ||w|| and a = h . U (the backward's term)."""
    u_par = tl.sum(acc * h, axis=1)
    grad = (acc - u_par[:, None] * h) * rnorm[:, None]
    tl.store(grad_ptr + (i[:, None].to(tl.int64) * C + c[:, None]) * n + k[None, :],
             grad.to(grad_ptr.dtype.element_ty), mask=valid[:, None] & (k[None, :] < n))
    tl.store(a_ptr + i.to(tl.int64) * C + c, u_par, mask=valid)
