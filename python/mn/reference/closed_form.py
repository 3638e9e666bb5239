"""Closed-form reference of `inner_gradient` (backend "torch"), chunked over the dictionary.

With hats for row-normalised vectors (docs/design.md, "Forward") and shared weight W (C, n):
    w_ij     = softmax_j(gamma * zh_i . kh_j)                     attention, B x S
    l_jc     = tau * kh_j . wh_c,  p_j = softmax_c(l_j)           per-entry logits, S x C
    ce_j     = -sum_c v_jc log p_jc,  delta_jc = tau dce_j/dl_jc = tau * (p_jc sum_c' v_jc' - v_jc)
    U_ic     = sum_j w_ij delta_jc kh_j                           the contraction, B x C x n
    grad_ic  = (U_ic - wh_c (wh_c . U_ic)) / ||w_c||,   inner_loss_i = sum_j w_ij ce_j
With per-example weights phi (B, C, n) (inner steps 2..T) the logits, p, ce and delta depend on i too.

The softmax over all S entries is assembled chunk by chunk: each chunk accumulates the unnormalised sums
sum_j e_ij, sum_j e_ij delta_jc kh_j and sum_j e_ij ce_j with e_ij = exp(s_ij - m_i), m_i a constant shift
(each query's maximum score, which needs no gradient); dividing at the end gives the softmax-weighted results.
A memory budget (`set_memory_budget`, 1 GiB by default) sizes the work: when what autograd keeps for the
backward (S x C x n elements with the shared weight, ~4 B x S x C per example) fits it, the whole dictionary is
one chunk and one GEMM, U = e @ (delta (x) kh), with nothing recomputed -- the plain closed form, no slower. Past
the budget, chunks hold half of it each and are wrapped in activation checkpointing, so autograd keeps only
their inputs and recomputes each in the backward: memory stays O(B·C·n + budget) for any S (S = 1e6 included),
and a first pass over the chunks takes the shift m.
Gradients are autograd's through these closed-form expressions (no hand-written backward here).
`delta` keeps the factor sum_c v_jc (= 1 for probabilities) so that the op is the exact derivative of the
weighted cross-entropy for any values, and its gradient w.r.t. values equals the literal reference's.
"""
from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from mn_kernels.rownorm import normalize

from ..attention import attention_weights, entry_keep

_MEMORY_BUDGET = 1 << 30


def set_memory_budget(nbytes: int) -> int:
    """Sets the bytes the `torch` backend may keep for its backward (what sizes its chunks and decides whether
    they are recomputed); returns the previous setting. 1 GiB by default."""
    global _MEMORY_BUDGET
    if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 1:
        raise ValueError(f"nbytes must be a positive integer, got {nbytes!r}")
    previous, _MEMORY_BUDGET = _MEMORY_BUDGET, nbytes
    return previous


def _plan(B: int, S: int, C: int, n: int, per_example: bool, itemsize: int, chunk_size: int | None):
    """(entries per chunk, whether chunks are checkpointed) under the memory budget."""
    # Bytes per entry that autograd keeps (the contraction's C x n, or B x C terms with per-example weights) and
    # that the step's B x S arrays take: scores, their exponentials and weights (3 itemsize), the keep mask
    # (1) and the hash's int64 temporaries (up to 24).
    per_entry = itemsize * (4 * B * C if per_example else C * n) + B * (3 * itemsize + 25)
    checkpointed = S * per_entry > _MEMORY_BUDGET
    if chunk_size is None:
        chunk_size = max(1, _MEMORY_BUDGET // (2 * per_entry)) if checkpointed else S
    return chunk_size, checkpointed


def _shift(s: torch.Tensor, gamma: float) -> torch.Tensor:
    """m_i = the largest of each row of s, chunks' maxima of the kept scores (gamma for a row with none kept or a
    non-finite one)."""
    m = s.amax(1)
    return torch.where(torch.isfinite(m), m, torch.full_like(m, gamma))


def _masked_scores(zh, kh, gamma, start, entry_dropout, seed):
    """gamma zh . kh^T (B x Sc) for the chunk of entries starting at `start`, -inf where dropped. The mask is
    drawn here from its hash, never stored: checkpointed chunks regenerate it instead of saving B x S bools."""
    s = gamma * zh @ kh.T
    keep = entry_keep(zh.shape[0], torch.arange(start, start + kh.shape[0], device=zh.device), entry_dropout, seed,
                      zh.device)
    return s if keep is None else s.masked_fill(~keep, float("-inf"))


def _weighted_sums(e, kh, values, wh, tau):
    """(sum_j e_ij delta_jc kh_j (B, C, n), sum_j e_ij ce_j (B,)) over the entries of kh, for weights e (B x Sc):
    one GEMM with the shared weight, where delta and ce are per entry; per-entry-and-query otherwise."""
    if wh.dim() == 2:                                                            # shared weight
        logp = torch.log_softmax(tau * kh @ wh.T, dim=-1)                        # Sc x C
        delta = tau * (torch.exp(logp) * values.sum(-1, keepdim=True) - values)
        ce = -(values * logp).sum(-1)                                            # Sc
        return _Contraction.apply(e, delta, kh), e @ ce
    logp = torch.log_softmax(tau * torch.einsum("jn,bcn->bjc", kh, wh), dim=-1)  # B x Sc x C
    delta = tau * (torch.exp(logp) * values.sum(-1, keepdim=True) - values)
    ce = -(values * logp).sum(-1)                                                # B x Sc
    return (e[:, :, None] * delta).transpose(1, 2) @ kh, (e * ce).sum(1)


class _Contraction(torch.autograd.Function):
    """U_ic = sum_j e_ij delta_jc kh_j (B, C, n) from e (B, Sc), delta (Sc, C), kh (Sc, n) as one GEMM,
    U = e @ Y with Y = delta (x) kh (Sc x C n), the plain closed form's. Its backward takes the GEMM's two
    products and reduces dY = e^T dU to ddelta and dkh by batched contractions over n and C, where autograd
    through the elementwise Y would form two more Sc x C x n products to sum. A backward that must itself be
    differentiable (create_graph) goes through autograd instead."""

    @staticmethod
    def forward(ctx, e, delta, kh):
        Y = (delta[:, :, None] * kh[:, None, :]).flatten(1)
        ctx.save_for_backward(e, delta, kh, Y)
        return (e @ Y).view(e.shape[0], *delta.shape[1:], kh.shape[1])

    @staticmethod
    def backward(ctx, dU):
        e, delta, kh, Y = ctx.saved_tensors
        if torch.is_grad_enabled():
            inputs = [x.view_as(x) for x in (e, delta, kh)]
            U = torch.einsum("bs,sc,sn->bcn", *inputs)
            wanted = [x for x, need in zip(inputs, ctx.needs_input_grad) if need]
            grads = iter(torch.autograd.grad(U, wanted, dU, create_graph=True))
            return tuple(next(grads) if need else None for need in ctx.needs_input_grad)
        need_e, need_delta, need_kh = ctx.needs_input_grad
        dU = dU.reshape(dU.shape[0], -1)
        de = dU @ Y.T if need_e else None
        ddelta = dkh = None
        if need_delta or need_kh:
            dY = (e.T @ dU).view(*delta.shape, kh.shape[1])                      # Sc x C x n
            ddelta = torch.einsum("scn,sn->sc", dY, kh) if need_delta else None
            dkh = torch.einsum("scn,sc->sn", dY, delta) if need_kh else None
        return de, ddelta, dkh


def _chunk_sums(zh, kh, values, wh, tau, m, gamma, start, entry_dropout, seed):
    """Unnormalised sums over one chunk of entries: (sum e delta kh (B,C,n), sum e (B,), sum e ce (B,)) with
    e_ij = exp(s_ij - m_i)."""
    e = torch.exp(_masked_scores(zh, kh, gamma, start, entry_dropout, seed) - m[:, None])
    U, loss = _weighted_sums(e, kh, values, wh, tau)
    return U, e.sum(1), loss


def _whole_dictionary(zh, kh, values, wh, tau, gamma, entry_dropout, seed):
    """(U (B, C, n), inner_loss (B,)) over every entry at once: the attention's softmax directly, no shift pass."""
    keep = entry_keep(zh.shape[0], torch.arange(kh.shape[0], device=zh.device), entry_dropout, seed, zh.device)
    return _weighted_sums(attention_weights(gamma * zh @ kh.T, keep), kh, values, wh, tau)


def inner_gradient_torch(z, keys, values, weight, tau, *, gamma, entry_dropout=0.0, seed=None,
                         chunk_size=None):
    """Per-example gradient of the weighted inner loss w.r.t. the cosine classifier weight.

    z (B, n), keys (S, n), values (S, C), weight (C, n) shared or (B, C, n) per example, tau 0-d.
    Returns grad (B, C, n) and inner_loss (B,). chunk_size: entries per chunk (default: from the memory budget).
    """
    B, n = z.shape
    S, C = values.shape
    per_example = weight.dim() == 3
    chunk_size, checkpointed = _plan(B, S, C, n, per_example, z.element_size(), chunk_size)
    zh, kh, wh = normalize(z), normalize(keys), normalize(weight)
    tau = tau.reshape(())
    chunks = [slice(a, min(a + chunk_size, S)) for a in range(0, S, chunk_size)]

    if len(chunks) == 1 and not checkpointed:
        U, loss = _whole_dictionary(zh, kh, values, wh, tau, gamma, entry_dropout, seed)
        return _project(U, wh, weight), loss

    with torch.no_grad():                                   # the shift m_i: max kept score (or gamma)
        m = torch.stack([_masked_scores(zh, kh[c], gamma, c.start, entry_dropout, seed).amax(1) for c in chunks], 1)
        m = _shift(m, gamma)
    track = torch.is_grad_enabled() and any(t.requires_grad for t in (z, keys, values, weight, tau))
    sums = None
    for c in chunks:
        args = (zh, kh[c], values[c], wh, tau, m, gamma, c.start, entry_dropout, seed)
        part = checkpoint(_chunk_sums, *args, use_reentrant=False) if track and checkpointed else _chunk_sums(*args)
        sums = part if sums is None else [a + b for a, b in zip(sums, part)]
    U, denom, loss = sums
    # All entries dropped: denom = 0, grad = loss = 0. A NaN denom (NaN input) must stay NaN, forward and backward.
    denom = torch.where(denom == 0, torch.ones_like(denom), denom)
    return _project(U / denom[:, None, None], wh, weight), loss / denom


def _project(U, wh, weight):
    """grad_ic = (U_ic - wh_c (wh_c . U_ic)) / ||w_c||."""
    return (U - wh * (wh * U).sum(-1, keepdim=True)) / weight.norm(dim=-1, keepdim=True).clamp_min(1e-12)
