"""Closed-form reference of `inner_gradient` (backend "torch"), chunked over the dictionary.

With hats for row-normalised vectors (docs/design.md, "Forward") and shared weight W (C, n):
    w_ij     = softmax_j(gamma * zh_i . kh_j)                     attention, B x S
    l_jc     = tau * kh_j . wh_c,  p_j = softmax_c(l_j)           per-entry logits, S x C
    ce_j     = -sum_c v_jc log p_jc,  delta_jc = tau dce_j/dl_jc = tau * (p_jc sum_c' v_jc' - v_jc)
    U_ic     = sum_j w_ij delta_jc kh_j                           the contraction, B x C x n
    grad_ic  = (U_ic - wh_c (wh_c . U_ic)) / ||w_c||,   inner_loss_i = sum_j w_ij ce_j
With per-example weights phi (B, C, n) (inner steps 2..T) the logits, p, ce and delta depend on i too.

The softmax over all S entries is assembled chunk by chunk: a first pass takes each query's maximum
score (a constant shift, so it needs no gradient), a second accumulates the unnormalised sums
sum_j e_ij, sum_j e_ij delta_jc kh_j and sum_j e_ij ce_j with e_ij = exp(s_ij - m_i); dividing at the
end gives the softmax-weighted results. Each chunk of the second pass is wrapped in activation
checkpointing, so autograd keeps only the chunk's inputs and recomputes the chunk in backward: memory
stays O(B·C·n + chunk·C·n) (shared weight) or O(B·C·n + B·chunk·C) (per-example), never S x C x n.
Gradients are autograd's through these closed-form expressions (no hand-written backward here).
`delta` keeps the factor sum_c v_jc (= 1 for probabilities) so that the op is the exact derivative of the
weighted cross-entropy for any values, and its gradient w.r.t. values equals the literal reference's.
"""
from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from mn_kernels.rownorm import normalize

from ..attention import entry_keep

# The largest per-chunk intermediate (chunk x C x n, or B x chunk x C) in elements: 128 MiB in fp32. Each chunk
# costs a fixed number of ops (launches and checkpoint bookkeeping), so chunks are kept large.
CHUNK_ELEMENTS = 1 << 25


def _masked_scores(zh, kh, gamma, start, entry_dropout, seed):
    """gamma zh . kh^T (B x Sc) for the chunk of entries starting at `start`, -inf where dropped. The mask is
    drawn here from its hash, never stored: checkpointed chunks regenerate it instead of saving B x S bools."""
    s = gamma * zh @ kh.T
    keep = entry_keep(zh.shape[0], torch.arange(start, start + kh.shape[0], device=zh.device), entry_dropout, seed,
                      zh.device)
    return s if keep is None else s.masked_fill(~keep, float("-inf"))


def _chunk_sums(zh, kh, values, wh, tau, m, gamma, start, entry_dropout, seed):
    """Unnormalised sums over one chunk of entries: (sum e delta kh (B,C,n), sum e (B,), sum e ce (B,))."""
    s = _masked_scores(zh, kh, gamma, start, entry_dropout, seed)              # B x Sc
    e = torch.exp(s - m[:, None])
    if wh.dim() == 2:                                                            # shared weight
        logp = torch.log_softmax(tau * kh @ wh.T, dim=-1)                        # Sc x C
        delta = tau * (torch.exp(logp) * values.sum(-1, keepdim=True) - values)
        ce = -(values * logp).sum(-1)                                            # Sc
        delta_kh = (delta[:, :, None] * kh[:, None, :]).flatten(1)               # Sc x (C n)
        U = (e @ delta_kh).view(-1, *wh.shape)                                  # B x C x n
        return U, e.sum(1), e @ ce
    logp = torch.log_softmax(tau * torch.einsum("jn,bcn->bjc", kh, wh), dim=-1)  # B x Sc x C
    delta = tau * (torch.exp(logp) * values.sum(-1, keepdim=True) - values)
    ce = -(values * logp).sum(-1)                                                # B x Sc
    U = (e[:, :, None] * delta).transpose(1, 2) @ kh                             # B x C x n
    return U, e.sum(1), (e * ce).sum(1)


def inner_gradient_torch(z, keys, values, weight, tau, *, gamma, entry_dropout=0.0, seed=None,
                         chunk_size=None):
    """Per-example gradient of the weighted inner loss w.r.t. the cosine classifier weight.

    z (B, n), keys (S, n), values (S, C), weight (C, n) shared or (B, C, n) per example, tau 0-d.
    Returns grad (B, C, n) and inner_loss (B,). chunk_size: entries per chunk (default: the largest
    that keeps one chunk's intermediate under CHUNK_ELEMENTS).
    """
    B, n = z.shape
    S, C = values.shape
    per_example = weight.dim() == 3
    if chunk_size is None:
        chunk_size = max(1, CHUNK_ELEMENTS // (B * C if per_example else C * n))
    zh, kh, wh = normalize(z), normalize(keys), normalize(weight)
    tau = tau.reshape(())
    chunks = [slice(a, min(a + chunk_size, S)) for a in range(0, S, chunk_size)]

    with torch.no_grad():                                   # the shift m_i: max kept score (or gamma)
        m = torch.full((B,), float("-inf"), dtype=z.dtype, device=z.device)
        for c in chunks:
            m = torch.maximum(m, _masked_scores(zh, kh[c], gamma, c.start, entry_dropout, seed).amax(1))
        m = torch.where(torch.isfinite(m), m, torch.full_like(m, gamma))

    track = torch.is_grad_enabled() and any(t.requires_grad for t in (z, keys, values, weight, tau))
    U = z.new_zeros(B, C, n)
    denom = z.new_zeros(B)
    loss = z.new_zeros(B)
    for c in chunks:
        args = (zh, kh[c], values[c], wh, tau, m, gamma, c.start, entry_dropout, seed)
        dU, dd, dl = checkpoint(_chunk_sums, *args, use_reentrant=False) if track else _chunk_sums(*args)
        U, denom, loss = U + dU, denom + dd, loss + dl
    # All entries dropped: denom = 0, grad = loss = 0. A NaN denom (NaN input) must stay NaN, forward and backward.
    denom = torch.where(denom == 0, torch.ones_like(denom), denom)
    U = U / denom[:, None, None]
    grad = (U - wh * (wh * U).sum(-1, keepdim=True)) / weight.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return grad, loss / denom
