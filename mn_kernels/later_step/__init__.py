"""
Fused later inner step of Meta-Neighborhoods (steps 2..T: per-example classifier weights)
=========================================================================================

Step t >= 2 takes the gradient of the same attention-weighted inner loss at per-example weights ``phi``
(B x C x n), the previous step's adapted weights. The attention ``w_ij`` (and its dropout mask) is step 1's,
recomputed from z, the keys and the seed; the per-entry logits now depend on the query. Hats are row-normalised
vectors (``phh_ic = phi_ic / ||phi_ic||``), ``sigma_j = sum_c v_jc``::

    l_ijc     = tau kh_j . phh_ic                m_ij = logsumexp_c l_ijc      p_ijc = exp(l_ijc - m_ij)
    ce_ij     = sigma_j m_ij - sum_c v_jc l_ijc  delta_ijc = tau (sigma_j p_ijc - v_jc)
    U_ic      = sum_j w_ij delta_ijc kh_j        loss_i = sum_j w_ij ce_ij
    g_ic      = (U_ic - phh_ic a_ic) / ||phi_ic||,   a_ic = phh_ic . U_ic

Backward, given dg (B x C x n) and dL (B)::

    dU_ic     = (dg_ic - phh_ic hw_ic) / ||phi_ic||,  hw_ic = phh_ic . dg_ic
    D_i       = sum_c dg_ic . g_ic + dL_i loss_i
    X_icj     = dU_ic . kh_j        rdot_ij = sum_c p_ijc X_icj        vX_ij = sum_c v_jc X_icj
    ds_ij     = w_ij (tau (sigma_j rdot_ij - vX_ij) + dL_i ce_ij - D_i)
    dl_ijc    = w_ij [tau sigma_j p_ijc (X_icj - rdot_ij) + dL_i (sigma_j p_ijc - v_jc)]
    dzh_i     = gamma sum_j ds_ij kh_j
    dkh_j     = gamma sum_i ds_ij zh_i + sum_ic [w_ij delta_ijc dU_ic + tau dl_ijc phh_ic]
    dphh_ic   = tau sum_j dl_ijc kh_j
    dv_jc     = sum_i w_ij [tau (rdot_ij - X_icj) - dL_i (l_ijc - m_ij)]
    dtau      = sum_ij w_ij (sigma_j rdot_ij - vX_ij) + sum_ijc dl_ijc l_ijc / tau
    dphi_ic   = (row-normalisation backward of dphh) - [(dg_ic . g_ic) phh_ic + hw_ic g_ic + a_ic dU_ic] / ||phi_ic||

rdot and ds are sums over every class: the per-(i, j, c) terms dl and ddelta = w X need rdot before they exist,
so the backward is three passes. Nothing of size B x S x C, B x S x n or S x C x n is stored; B x S arrays are
(m, ce forward; rdot, vX backward: the attention's size).

* ``stats_kernel``     grid (query block, entry tile), loop over classes: m and ce (one contraction: the logits)
* ``fwd_kernel``       grid (query block, class block), loop over entry tiles: the logits of the class block
                       again, ``A = w (x) delta``, ``U += A @ kh``; epilogue projects with each query's phh and
                       stores grad and a; loss from the class-block-0 programs (two contractions)
* ``bwd_stats_kernel`` grid (query block, entry tile), loop over classes: rdot and vX (logits and X)
* ``bwd_query_kernel`` grid (query block, class block), loop over entry tiles: dphh (and, class block 0, dzh)
* ``bwd_entry_kernel`` grid P programs over contiguous entry tiles, loop over query blocks and classes: dkh, dv
                       and a dtau partial per program, summed on the host in fixed order (deterministic, no
                       atomics)

Flops per step in units of one contraction 2 B S C n: forward 3, backward 9 (each pass recomputes the logits
and X it needs rather than storing B x S x C). The attention's log-normaliser comes from step 1's ``lse_kernel``.
Dtypes as step 1 (mn_kernels/inner_gradient): dot operands in the input dtype, everything else in float32
(float64 for float64 inputs). Files: ``forward.py``, ``backward.py``, ``configs.py``, ``launch.py``.
"""
from .configs import max_features
from .launch import later_step_bwd, later_step_fwd

__all__ = ["later_step_fwd", "later_step_bwd", "max_features"]
