"""nn layers: the Meta-Neighborhoods head, the vanilla output layers, and the model wrapper (paper Eq. 14)."""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from mn_kernels.rownorm import normalize

from ._validate import check_dropout, check_positive
from .backends import check_backend_name
from .functional import adapted_logits

INNER_LR_KINDS = ("scalar", "feature", "elementwise")


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def value_init(num_entries: int, num_outputs: int, std: float) -> torch.Tensor:
    """Raw value logits (S, C) ~ N(0, std) truncated at two std (TensorFlow's truncated_normal, as the authors')."""
    return nn.init.trunc_normal_(torch.empty(num_entries, num_outputs), std=std, a=-2 * std, b=2 * std)


class CosineClassifier(nn.Module):
    """Vanilla cosine output layer (paper Eq. 15): logits_c = tau * cos(z, w_c); tau learnable, starts at tau_init."""

    def __init__(self, in_features: int, num_classes: int, tau_init: float = 10.0):
        super().__init__()
        check_positive("in_features", in_features, integer=True)
        check_positive("num_classes", num_classes, integer=True)
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        self.tau = nn.Parameter(torch.tensor(float(tau_init)))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, in_features) -> logits (B, num_classes)."""
        return self.tau * normalize(z) @ normalize(self.weight).T


class DotClassifier(nn.Linear):
    """Vanilla dot-product output layer, logits = z W^T + b: the usual baseline."""


class MetaNeighborhoodsHead(nn.Module):
    """Cosine classifier fine-tuned per example on a learnable dictionary of S neighbours (paper §3, Eq. 13, 15).

    Parameters: keys (S, n) ~ N(0, key_init_std); value logits (S, C) ~ N(0, value_init_std) truncated at two
    std, whose softmax(value_scale * logits) are the values; the classifier weight (C, n); tau (starts at
    tau_init); the inner rate alpha: one scalar, one per feature (n,) or one per weight element (C, n)
    (`inner_lr`), starting at inner_lr_init, used as its absolute value. The defaults are the authors' code's
    (docs/design.md, "Training recipe"): keys 0.05, values softmax(10 * raw) with raw ~ N(0, 0.01), so under
    Adam the value logits move 10x faster than unscaled ones.
    entry_dropout: share of entries each example does not see, in training only (the authors use 0.5).

    forward(z (B, n)) -> adapted logits (B, C).
    """

    def __init__(self, in_features: int, num_classes: int, num_entries: int = 10000, gamma: float = 5.0,
                 tau_init: float = 10.0, inner_lr: str = "scalar", inner_lr_init: float = 0.05, inner_steps: int = 1,
                 entry_dropout: float = 0.0, backend: str = "auto", key_init_std: float = 0.05,
                 value_scale: float = 10.0, value_init_std: float = 0.01):
        super().__init__()
        for name, value in (("in_features", in_features), ("num_entries", num_entries), ("inner_steps", inner_steps)):
            check_positive(name, value, integer=True)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        for name, value in (("gamma", gamma), ("key_init_std", key_init_std), ("value_scale", value_scale),
                            ("value_init_std", value_init_std)):
            check_positive(name, value)
        _check_choice("inner_lr", inner_lr, INNER_LR_KINDS)
        check_dropout(entry_dropout, None)
        check_backend_name(backend)
        self.gamma, self.inner_steps, self.value_scale = float(gamma), inner_steps, float(value_scale)
        self.entry_dropout, self.backend = entry_dropout, backend
        self.keys = nn.Parameter(torch.randn(num_entries, in_features) * key_init_std)
        self.value_logits = nn.Parameter(value_init(num_entries, num_classes, value_init_std))
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.xavier_uniform_(self.weight)
        self.tau = nn.Parameter(torch.tensor(float(tau_init)))
        shape = {"scalar": (), "feature": (in_features,), "elementwise": (num_classes, in_features)}[inner_lr]
        self.inner_lr = nn.Parameter(torch.full(shape, float(inner_lr_init)))

    @property
    def values(self) -> torch.Tensor:
        """Entry label distributions (S, C): softmax(value_scale * value_logits)."""
        return torch.softmax(self.value_scale * self.value_logits, dim=-1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        p = self.entry_dropout if self.training else 0.0
        return adapted_logits(z, self.keys, self.values, self.weight, self.tau, self.inner_lr.abs(), gamma=self.gamma,
                              inner_steps=self.inner_steps, entry_dropout=p, backend=self.backend)

    def unadapted_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Logits of the shared classifier before the inner step(s): tau * cos(z, W)."""
        return self.tau * normalize(z) @ normalize(self.weight).T

    def extra_repr(self) -> str:
        S, C = self.value_logits.shape
        return (f"in_features={self.keys.shape[1]}, num_classes={C}, num_entries={S}, gamma={self.gamma}, "
                f"inner_lr={tuple(self.inner_lr.shape)}, inner_steps={self.inner_steps}, "
                f"entry_dropout={self.entry_dropout}, value_scale={self.value_scale}, backend={self.backend!r}")


class ClassifierOutput(NamedTuple):
    logits: torch.Tensor                 # (B, C) adapted logits: the prediction
    aux_logits: torch.Tensor | None      # (B, C) of the auxiliary un-adapted head, if any
    loss: torch.Tensor | None            # outer_loss + aux_weight * aux_loss, when targets were given
    outer_loss: torch.Tensor | None
    aux_loss: torch.Tensor | None


class MetaNeighborhoodsClassifier(nn.Module):
    """backbone -> features z -> Meta-Neighborhoods head, plus an auxiliary un-adapted cosine head xi on the
    same features, trained with total loss CE(head(z), y) + aux_weight * CE(xi(z), y) (paper Eq. 14, lambda = 1).
    aux_weight = 0 drops the auxiliary head (as in the authors' released code).

    forward(x, target=None) -> ClassifierOutput; losses are None without target.
    """

    def __init__(self, backbone: nn.Module, head: MetaNeighborhoodsHead, aux_weight: float = 1.0):
        super().__init__()
        if not isinstance(head, MetaNeighborhoodsHead):
            raise TypeError(f"head must be a MetaNeighborhoodsHead, got {type(head).__name__}")
        if isinstance(aux_weight, bool) or not isinstance(aux_weight, (int, float)) or aux_weight < 0:
            raise ValueError(f"aux_weight must be a number >= 0, got {aux_weight!r}")
        self.backbone, self.head, self.aux_weight = backbone, head, float(aux_weight)
        S, C = head.value_logits.shape
        self.aux_head = CosineClassifier(head.keys.shape[1], C) if aux_weight > 0 else None

    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None) -> ClassifierOutput:
        z = self.backbone(x)
        logits = self.head(z)
        aux_logits = self.aux_head(z) if self.aux_head is not None else None
        if target is None:
            return ClassifierOutput(logits, aux_logits, None, None, None)
        outer = F.cross_entropy(logits, target)
        aux = F.cross_entropy(aux_logits, target) if aux_logits is not None else None
        loss = outer if aux is None else outer + self.aux_weight * aux
        return ClassifierOutput(logits, aux_logits, loss, outer, aux)
