"""The plain closed form of one head step, a benchmark reference (not a backend): what a user would write in a few
lines of PyTorch instead of this package. Y = delta (x) kh is materialised as an S x (C n) matrix and the
contraction U = softmax(gamma zh kh^T) @ Y is one GEMM; autograd does the rest (docs/design.md, "Forward").
Shared weight at step 1, per-example weights (a B x S x C array of logits) at steps 2..T; no entry dropout."""
import torch
import torch.nn.functional as F


def plain_adapted_logits(z, keys, values, weight, tau, alpha, *, gamma, inner_steps=1):
    """tau cos(z_i, phi_i) (B, C) after `inner_steps` steps, as mn.adapted_logits computes it."""
    zh, kh, wh = F.normalize(z, dim=1), F.normalize(keys, dim=1), F.normalize(weight, dim=1)
    C, n = weight.shape
    sigma = values.sum(1, keepdim=True)
    logp = torch.log_softmax(tau * kh @ wh.T, dim=1)                                # S x C
    delta = tau * (logp.exp() * sigma - values)
    w = torch.softmax(gamma * zh @ kh.T, dim=1)                                      # B x S
    U = (w @ (delta[:, :, None] * kh[:, None, :]).reshape(-1, C * n)).view(-1, C, n)  # one B x S x (C n) GEMM
    phi = weight - alpha * (U - wh * (wh * U).sum(-1, keepdim=True)) / weight.norm(dim=1, keepdim=True)
    for _ in range(inner_steps - 1):                                                 # per-example weights
        ph = F.normalize(phi, dim=-1)
        p = torch.softmax(tau * torch.einsum("jn,bcn->bjc", kh, ph), dim=-1)         # B x S x C
        U = torch.einsum("bj,bjc,jn->bcn", w, tau * (p * sigma - values), kh)
        phi = phi - alpha * (U - ph * (ph * U).sum(-1, keepdim=True)) / phi.norm(dim=-1, keepdim=True)
    return tau * torch.einsum("bn,bcn->bc", zh, F.normalize(phi, dim=-1))
