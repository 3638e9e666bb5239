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
    ce_j     = -sum_c v_jc log p_jc,  delta_jc = tau * (sigma_j p_jc - v_jc),  sigma_j = sum_c v_jc
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
The forward hands the backward ``lse``, ``a`` and its preparation (row norms, delta, ce: ``launch.Setup``).

* ``lse_kernel``   grid (query block, entry split): online (running max) log-sum-exp of the scores;
                    the splits are combined on the host. Knowing ``lse`` exactly before the main pass
                    makes the weights final (``exp(s - lse)``) in every later kernel, so partial sums
                    need no rescaling and any gamma is safe.
* ``fwd_kernel``   grid (query block, class block of BLOCK_C = 2..4), loop over entry tiles:
                    ``A = w (x) delta`` as a (BLOCK_B*BLOCK_C) x BLOCK_S tile, ``U += A @ kh_tile``;
                    epilogue projects with P_c and stores grad; loss from the class-block-0 programs.
* ``bwd_kernel``   grid P programs (at most one per SM), each owning a contiguous group of entry tiles
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
uint32 hash of ``mn_kernels.dropout``; dropped entries get zero weight and leave the normaliser; a query with
every entry dropped has ``lse = -inf``, zero weights, zero grad and zero loss.

Dtypes: float32 / bfloat16 / float16 inputs use their own dtype as ``tl.dot`` operands and float32
accumulators; float64 inputs compute in float64. fp32 dots follow ``torch.get_float32_matmul_precision()``.
Every ``tl.dot`` into an accumulator names ``out_dtype`` (the accumulator's): Triton <= 3.6 defaults it to
float32 and rejects a float64 accumulator otherwise (the interpreter of later versions accepts it).
Per-entry arrays (delta, ddelta) are class-major, C x S, as the kernels read them: no transposes.
Feature rows are whole in a tile (BLOCK_N >= n): n <= ``max_features(dtype)`` (1024; float64 512).

Files: ``forward.py`` (lse and forward kernels), ``backward.py`` (backward kernel), ``configs.py`` (launch
configurations, autotuning, the feature limit), ``launch.py`` (host: preparation, launches, the math around
them from ``mn_kernels.{rownorm, entry_loss, projection}``).
"""
from ..launching import max_features
from .launch import inner_gradient_bwd, inner_gradient_fwd

__all__ = ["inner_gradient_fwd", "inner_gradient_bwd", "max_features"]
