"""The plain closed form of one head step, a benchmark reference (not a backend): what a user would write in a few
lines of PyTorch instead of this package. Y = delta (x) kh is materialised as an S x (C n) matrix and the
contraction U = softmax(gamma zh kh^T) @ Y is one GEMM; autograd does the rest (docs/design.md, "Forward").
One inner step, shared weight, no entry dropout."""
import torch
import torch.nn.functional as F


def plain_adapted_logits(z, keys, values, weight, tau, alpha, *, gamma):
    """tau cos(z_i, W - alpha grad_i) (B, C), as mn.adapted_logits(..., inner_steps=1) computes it."""
    zh, kh, wh = F.normalize(z, dim=1), F.normalize(keys, dim=1), F.normalize(weight, dim=1)
    C, n = weight.shape
    logp = torch.log_softmax(tau * kh @ wh.T, dim=1)                                # S x C
    delta = tau * (logp.exp() * values.sum(1, keepdim=True) - values)
    w = torch.softmax(gamma * zh @ kh.T, dim=1)                                      # B x S
    U = (w @ (delta[:, :, None] * kh[:, None, :]).reshape(-1, C * n)).view(-1, C, n)  # one B x S x (C n) GEMM
    grad = (U - wh * (wh * U).sum(-1, keepdim=True)) / weight.norm(dim=1, keepdim=True)
    phi = weight - alpha * grad
    return tau * torch.einsum("bn,bcn->bc", zh, F.normalize(phi, dim=-1))
