"""DenseNet-BC for 32x32 images (Huang et al. 2017) as the authors' code builds its "DenseNet40-BC"
(network/densenet.py): a 3x3 conv with 2 x growth channels, three dense blocks of 12 bottleneck layers each
(BN-ReLU-conv1x1 to 4 x growth, dropout, BN-ReLU-conv3x3 to growth, dropout; growth rate 12), transitions
BN-ReLU-conv1x1 (compression 0.5)-dropout-2x2 average pooling, dropout rate 0.2, a final BN: 258-d features
(24 + 144 = 168 -> 84, + 144 = 228 -> 114, + 144 = 258). Counting both convs of a bottleneck layer that is
deeper than the 40 of the usual DenseNet-BC (6 bottleneck layers a block); the name follows the paper.
"""
from __future__ import annotations

import torch
from torch import nn

from ._common import batch_norm, init_convs, pooled_features


class DenseLayer(nn.Module):
    """BN-ReLU-conv1x1 (4 x growth)-dropout, BN-ReLU-conv3x3 (growth)-dropout, output concatenated to the input."""

    def __init__(self, in_channels: int, growth_rate: int, dropout: float):
        super().__init__()
        inner = 4 * growth_rate
        self.bn1, self.conv1 = batch_norm(in_channels), nn.Conv2d(in_channels, inner, 1, bias=False)
        self.bn2, self.conv2 = batch_norm(inner), nn.Conv2d(inner, growth_rate, 3, 1, 1, bias=False)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.drop(self.conv1(torch.relu(self.bn1(x))))
        out = self.drop(self.conv2(torch.relu(self.bn2(out))))
        return torch.cat([x, out], dim=1)


class Transition(nn.Sequential):
    """BN-ReLU-conv1x1 (compression)-dropout-2x2 average pooling."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float):
        super().__init__(batch_norm(in_channels), nn.ReLU(), nn.Conv2d(in_channels, out_channels, 1, bias=False),
                         nn.Dropout(dropout), nn.AvgPool2d(2))


class DenseNetBC(nn.Module):
    """DenseNet-BC with three dense blocks of `layers_per_block` bottleneck layers.

    final_relu=False leaves out the ReLU after the last BN (paper: for the cosine output layer).
    forward(x (B, in_channels, H, W)) -> (B, feature_dim): 258 for the defaults (the authors' DenseNet40-BC).
    """

    def __init__(self, *, layers_per_block: int = 12, growth_rate: int = 12, compression: float = 0.5,
                 dropout: float = 0.2, in_channels: int = 3, final_relu: bool = True):
        super().__init__()
        for name, value in (("layers_per_block", layers_per_block), ("growth_rate", growth_rate)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0 < compression <= 1:
            raise ValueError(f"compression must be in (0, 1], got {compression!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        channels = 2 * growth_rate
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 3, 1, 1, bias=False)]
        for block in range(3):
            for _ in range(layers_per_block):
                layers.append(DenseLayer(channels, growth_rate, dropout))
                channels += growth_rate
            if block < 2:
                out = int(channels * compression)
                layers.append(Transition(channels, out, dropout))
                channels = out
        self.features = nn.Sequential(*layers)
        self.bn = batch_norm(channels)
        self.final_relu, self.feature_dim = final_relu, channels
        init_convs(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pooled_features(self.bn(self.features(x)), self.final_relu)
