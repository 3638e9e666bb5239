"""Meta-Neighborhoods for any output network f_phi (paper Eq. 8-11): the regression MLP, the toy's linear classifier.

For query x_i, attention w_ij = softmax_j(sim(x_i, k_j)) with sim = gamma * cos (Eq. 12) or -gamma * ||x_i - k_j||
(Eq. 11); inner loss L_i(phi) = sum_j w_ij L(f_phi(k_j), v_j) with L = MSE (regression) or soft-label CE;
phi_i = phi - alpha * grad L_i(phi) (repeated `inner_steps` times); output f_{phi_i}(x_i).

Step 1 takes the per-entry gradients grad L(f_phi(k_j), v_j) once (torch.func: vmap of grad over entries,
S x |phi|) and weights them by attention: grad L_i = sum_j w_ij grad_j. Steps 2..T have per-example
parameters, so they differentiate each query's weighted loss (vmap over queries of grad). torch.func
transforms compose with autograd, so the outer loss reaches phi, the dictionary and alpha (second order).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from mn_kernels.rownorm import normalize

from ._validate import check_dropout, check_positive
from .attention import attention_weights, entry_keep
from .functional import draw_seed
from .grad_mode import autograd_enabled, usable
from .layers import value_init

SIMILARITIES = ("cosine", "euclidean")
INNER_LOSSES = ("mse", "ce")


def similarity_scores(x, keys, similarity: str, gamma: float) -> torch.Tensor:
    """Attention logits (B, S): gamma * cos(x_i, k_j) or -gamma * ||x_i - k_j||."""
    if similarity == "cosine":
        return gamma * normalize(x) @ normalize(keys).T
    # Direct differences, not the |x|^2 + |k|^2 - 2 x.k expansion, which cancels badly for close points.
    return -gamma * torch.cdist(x, keys, compute_mode="donot_use_mm_for_euclid_dist")


def pointwise_loss(out: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-row loss (...,): mean squared error over outputs, or soft-label cross-entropy."""
    if kind == "mse":
        return ((out - target) ** 2).mean(-1)
    return -(target * torch.log_softmax(out, dim=-1)).sum(-1)


class MetaNeighborhoods(nn.Module):
    """Wraps an output network `net` (in_features -> out_features) with a learnable dictionary in its input space.

    keys (S, in_features) ~ N(0, key_init_std); values (S, out_features): regression targets (inner_loss="mse";
    drawn uniformly from `value_range`, as the paper) or label distributions softmax(value_scale * raw) with raw
    ~ N(0, value_init_std) truncated at two std (inner_loss="ce"; the authors' form, as MetaNeighborhoodsHead).
    inner_lr: "scalar" (one learnable alpha) or "elementwise" (one per parameter element, Meta-SGD).
    entry_dropout applies in training only.

    forward(x (B, in_features)) -> (B, out_features): the outputs of the per-example fine-tuned networks.
    """

    def __init__(self, net: nn.Module, in_features: int, out_features: int, num_entries: int = 1000, *,
                 similarity: str = "cosine", inner_loss: str = "mse", gamma: float = 10.0, inner_lr: str = "scalar",
                 inner_lr_init: float = 0.05, inner_steps: int = 1, entry_dropout: float = 0.0,
                 key_init_std: float = 0.1, value_scale: float = 10.0, value_init_std: float = 0.01,
                 value_range: tuple[float, float] = (0.0, 1.0)):
        super().__init__()
        if not isinstance(net, nn.Module):
            raise TypeError(f"net must be an nn.Module, got {type(net).__name__}")
        for name, value in (("in_features", in_features), ("out_features", out_features),
                            ("num_entries", num_entries), ("inner_steps", inner_steps)):
            check_positive(name, value, integer=True)
        for name, value in (("gamma", gamma), ("key_init_std", key_init_std), ("value_scale", value_scale),
                            ("value_init_std", value_init_std)):
            check_positive(name, value)
        for name, value, choices in (("similarity", similarity, SIMILARITIES), ("inner_loss", inner_loss, INNER_LOSSES),
                                     ("inner_lr", inner_lr, ("scalar", "elementwise"))):
            if value not in choices:
                raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
        check_dropout(entry_dropout, None)
        lo, hi = value_range
        if not lo < hi:
            raise ValueError(f"value_range must be (low, high) with low < high, got {value_range!r}")
        self.net, self.similarity, self.inner_loss = net, similarity, inner_loss
        self.gamma, self.inner_steps, self.entry_dropout = float(gamma), inner_steps, entry_dropout
        self.value_scale = float(value_scale)
        self.keys = nn.Parameter(torch.randn(num_entries, in_features) * key_init_std)
        init = (torch.rand(num_entries, out_features) * (hi - lo) + lo if inner_loss == "mse"
                else value_init(num_entries, out_features, value_init_std))
        self.value_params = nn.Parameter(init)
        # Inner rates are keyed like net's parameters ('.' is not allowed in ParameterDict keys).
        self.inner_lr = nn.ParameterDict({
            name.replace(".", "/"):
                nn.Parameter(torch.full(p.shape if inner_lr == "elementwise" else (), inner_lr_init))
            for name, p in net.named_parameters()})

    @property
    def values(self) -> torch.Tensor:
        """Entry targets (S, out_features): raw for MSE, softmax(value_scale * logits) for CE."""
        if self.inner_loss == "mse":
            return self.value_params
        return torch.softmax(self.value_scale * self.value_params, dim=-1)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """Attention weights (B, S) of queries x over the entries (dropout applied in training)."""
        p = self.entry_dropout if self.training else 0.0
        entries = torch.arange(self.keys.shape[0], device=x.device)
        keep = entry_keep(x.shape[0], entries, p, draw_seed(p, None, x.device), x.device)
        return attention_weights(similarity_scores(x, self.keys, self.similarity, self.gamma), keep)

    def _entry_loss(self, params, key, value):
        return pointwise_loss(functional_call(self.net, params, (key[None],))[0], value, self.inner_loss)

    def _weighted_loss(self, params, w_row, keys, values):
        out = functional_call(self.net, params, (keys,))
        return (w_row * pointwise_loss(out, values, self.inner_loss)).sum()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.keys.shape[1]:
            raise ValueError(f"x must have shape (B, {self.keys.shape[1]}), got {tuple(x.shape)}")
        tracking = torch.is_grad_enabled()
        with autograd_enabled():                      # torch.func needs autograd, also under no_grad
            out = self._adapted_forward(usable(x))
        return out if tracking else out.detach()

    def _adapted_forward(self, x):
        params = dict(self.net.named_parameters())
        alpha = {name: self.inner_lr[name.replace(".", "/")].abs() for name in params}
        keys, values = self.keys, self.values
        w = self.attention(x)                                                        # B x S
        per_entry = vmap(grad(self._entry_loss), in_dims=(None, 0, 0))(params, keys, values)   # name -> S x shape
        phi = {name: p - alpha[name] * torch.tensordot(w, per_entry[name], dims=1) for name, p in params.items()}
        step = vmap(grad(self._weighted_loss), in_dims=(0, 0, None, None))
        for _ in range(self.inner_steps - 1):
            g = step(phi, w, keys, values)
            phi = {name: p - alpha[name] * g[name] for name, p in phi.items()}
        return vmap(lambda p, xi: functional_call(self.net, p, (xi[None],))[0])(phi, x)
