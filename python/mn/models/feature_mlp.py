"""Feature backbones for tabular classification: an MLP mapping inputs (B, d) to features (B, n), followed by the
paper's output layers as on images (vanilla dot or cosine layer; MN head + auxiliary cosine head), so vanilla and
MN compare on the same backbone as in Table 1.

  mlp_small: d -> 64 -> 64                the backbone of the comparison
  mlp_wide:  d -> 192 -> 192 -> 64        the capacity-matched vanilla: at least as many parameters as mlp_small
                                          plus MN's dictionary (keys S x 64, values S x C) and heads at the
                                          tabular sets' defaults (S = 500; tests/test_data_generated.py checks)
"""
from __future__ import annotations

import torch
from torch import nn

FEATURE_MLPS = {"mlp_small": (64, 64), "mlp_wide": (192, 192, 64)}


class FeatureMLP(nn.Module):
    """forward(x (B, in_features)) -> features (B, hidden[-1]): [Linear, ReLU] per hidden layer, the last ReLU
    only with final_relu (dropped for the cosine and MN heads, as the paper does for its backbones)."""

    def __init__(self, in_features: int, hidden: tuple[int, ...] = (64, 64), *, final_relu: bool = True):
        super().__init__()
        if isinstance(in_features, bool) or not isinstance(in_features, int) or in_features < 1:
            raise ValueError(f"in_features must be a positive integer, got {in_features!r}")
        if not hidden or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden):
            raise ValueError(f"hidden must be a non-empty sequence of positive integers, got {hidden!r}")
        layers, width = [], in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.layers = nn.Sequential(*layers[:-1])
        self.feature_dim, self.final_relu = width, final_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2:
            raise ValueError(f"x must be (B, in_features) tabular inputs, got {tuple(x.shape)}")
        out = self.layers(x)
        return torch.relu(out) if self.final_relu else out


def build_feature_mlp(name: str, in_features: int, *, final_relu: bool = True) -> tuple[nn.Module, int]:
    """The named feature MLP (FEATURE_MLPS) for inputs of in_features, and its feature size."""
    if name not in FEATURE_MLPS:
        raise ValueError(f"backbone must be one of {', '.join(map(repr, FEATURE_MLPS))}, got {name!r}")
    net = FeatureMLP(in_features, FEATURE_MLPS[name], final_relu=final_relu)
    return net, net.feature_dim
