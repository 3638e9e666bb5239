"""The per-entry half of the inner loss, query-independent, O(S C n): each entry's softmax over the classes,
its cross-entropy against its value, the derivative delta the contraction weighs, and their backward
(docs/design.md, "Forward" and "Backward", step 3).

    l_jc = tau kh_j . wh_c      log p_j = log_softmax_c(l_j)      sigma_j = sum_c v_jc
    ce_j = -sum_c v_jc log p_jc      delta_jc = tau d ce_j / d l_jc = tau (sigma_j p_jc - v_jc)

sigma_j = 1 for probabilities; keeping it makes delta the exact derivative for any values. Arrays are
class-major (C x S), the layout the kernels read (contiguous entry tiles per class). The keys come raw with
their reciprocal norms (kh = keys k_rnorm), so no normalised S x n copy is made. Everything is in the dtype of
k_rnorm (the compute dtype); C x S temporaries are updated in place so that at most four are alive at once.
"""
import torch


def entry_softmax(keys, k_rnorm, wh, tau):
    """(log p, p), both C x S: log p_j = log_softmax_c(tau kh_j . wh_c). keys (S, n) raw, k_rnorm (S, 1),
    wh (C, n) normalised, tau 0-d."""
    logitsT = (wh @ keys.t().to(k_rnorm.dtype)).mul_(k_rnorm.t() * tau)
    logpT = torch.log_softmax(logitsT, dim=0)
    del logitsT
    return logpT, logpT.exp()


def entry_loss(keys, k_rnorm, wh, vT, tau):
    """-> sigma (1, S), ce (S,), deltaT (C, S) for values vT (C, S) in the compute dtype."""
    sigma = vT.sum(0, keepdim=True)
    logpT, pT = entry_softmax(keys, k_rnorm, wh, tau)
    ce = -torch.einsum("cs,cs->s", vT, logpT)
    del logpT
    return sigma, ce, pT.mul_(sigma).sub_(vT).mul_(tau)          # tau (sigma p - v), in p's buffer


def entry_loss_bwd(keys, k_rnorm, wh, vT, sigma, tau, ddeltaT, dce, dkh):
    """Backward of `entry_loss` given ddelta (C, S; overwritten) and dce (S,): -> dvalues (S, C), dtau (0-d),
    dwh (C, n) (the gradient of the normalised weight), and dkh (S, n) += tau dl^T wh in place, where
    dl_jc = d/dl_jc is the gradient of the entry logits. p and log p are recomputed (one C x n x S product)
    rather than kept from the forward."""
    logpT, p = entry_softmax(keys, k_rnorm, wh, tau)
    S, C = keys.shape[0], wh.shape[0]
    dv = torch.empty(S, C, device=keys.device, dtype=k_rnorm.dtype)       # written through its transpose
    dvT = torch.sub(torch.linalg.vecdot(p, ddeltaT, dim=0)[None, :], ddeltaT, out=dv.t()).mul_(tau)
    dvT.addcmul_(dce[None, :].expand_as(logpT), logpT, value=-1)         # - dce log p
    del logpT
    q = torch.mul(p, sigma).sub_(vT)                                      # sigma p - v = delta / tau
    dtau = torch.einsum("cs,cs->", q, ddeltaT)
    dp = ddeltaT.mul_(sigma).mul_(tau)                                    # tau sigma ddelta, in ddelta's buffer
    dl = dp.sub_(torch.linalg.vecdot(p, dp, dim=0)[None, :]).mul_(p)      # p (dp - sum_c p dp), in place
    dl.addcmul_(dce[None, :].expand_as(q), q)                             # + dce (sigma p - v)
    del p, q
    dkh.addmm_(dl.t(), tau * wh)                                          # + tau dl^T wh
    dlk = dl.mul_(k_rnorm.t()) @ keys.to(k_rnorm.dtype)                   # sum_j dl_jc kh_j
    del dl
    return dv, dtau + (dlk * wh).sum(), tau * dlk                         # dtau: + sum_jc dl_jc cos_jc
