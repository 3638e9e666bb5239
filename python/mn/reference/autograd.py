"""Paper-literal reference of `inner_gradient`: the ground truth the other backends are checked against.

It does what Eq. (13) says with nothing derived by hand: every query gets its own copy of the classifier
weight, the B x S x C logits of every entry under every copy are formed, the attention-weighted
soft-label cross-entropy is summed, and `torch.autograd.grad(create_graph=True)` gives the per-example
gradient (differentiable, so the outer loss reaches the dictionary through it). Memory O(B·S·C + B·C·n):
for verification at small sizes.
"""
from __future__ import annotations

import torch

from mn_kernels.rownorm import normalize

from ..attention import attention_weights, entry_keep
from ..grad_mode import autograd_enabled, usable


def inner_gradient_autograd(z, keys, values, weight, tau, *, gamma, entry_dropout=0.0, seed=None):
    """Per-example gradient of the weighted inner loss w.r.t. the cosine classifier weight.

    z (B, n), keys (S, n), values (S, C), weight (C, n) shared or (B, C, n) per example, tau 0-d.
    Returns grad (B, C, n) and inner_loss (B,). Differentiable when grad mode is on and an input
    requires grad; also runs under no_grad / inference_mode (autograd is used internally).
    """
    differentiable = torch.is_grad_enabled() and any(
        t.requires_grad for t in (z, keys, values, weight, tau))
    with autograd_enabled():
        z, keys, values, weight, tau = (usable(t) for t in (z, keys, values, weight, tau))
        B, n = z.shape
        S, C = values.shape
        W = weight.expand(B, C, n) if weight.dim() == 2 else weight
        if not W.requires_grad:
            W = W.detach().requires_grad_()
        kh = normalize(keys)
        keep = entry_keep(B, torch.arange(S, device=z.device), entry_dropout, seed, z.device)
        w = attention_weights(gamma * normalize(z) @ kh.T, keep)                # B x S
        logits = tau * torch.einsum("jn,bcn->bjc", kh, normalize(W))           # B x S x C
        ce = -(values * torch.log_softmax(logits, dim=-1)).sum(-1)              # B x S
        inner_loss = (w * ce).sum(1)
        (grad,) = torch.autograd.grad(inner_loss.sum(), W, create_graph=differentiable)
    if not differentiable:
        grad, inner_loss = grad.detach(), inner_loss.detach()
    return grad, inner_loss
