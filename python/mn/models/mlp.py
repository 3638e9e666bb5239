"""The regression output network of the paper's UCI experiments: 3 fully connected hidden layers of 128."""
from __future__ import annotations

from torch import nn


class RegressionMLP(nn.Sequential):
    """in_features -> [Linear 128, ReLU] x depth -> Linear out_features.

    forward(x (B, in_features)) -> (B, out_features). With Meta-Neighborhoods the whole network is f_phi,
    adapted per example (the paper learns the regression dictionary in input space).
    """

    def __init__(self, in_features: int, out_features: int = 1, *, hidden: int = 128, depth: int = 3):
        for name, value in (("in_features", in_features), ("out_features", out_features), ("hidden", hidden),
                            ("depth", depth)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        layers = []
        for i in range(depth):
            layers += [nn.Linear(in_features if i == 0 else hidden, hidden), nn.ReLU()]
        super().__init__(*layers, nn.Linear(hidden, out_features))
