"""DenseNet-BC for 32x32 images (Huang et al. 2017): DenseNet40-BC has growth rate 12, three dense blocks of
(40 - 4) / 6 = 6 bottleneck layers each, compression 0.5 in the transitions: 132-d features.
"""
from __future__ import annotations

import torch
from torch import nn

from ._common import init_convs, pooled_features


class DenseLayer(nn.Module):
    """BN-ReLU-conv1x1 (4 x growth) - BN-ReLU-conv3x3 (growth), output concatenated to the input."""

    def __init__(self, in_channels: int, growth_rate: int):
        super().__init__()
        inner = 4 * growth_rate
        self.bn1, self.conv1 = nn.BatchNorm2d(in_channels), nn.Conv2d(in_channels, inner, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(inner), nn.Conv2d(inner, growth_rate, 3, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(torch.relu(self.bn1(x)))
        out = self.conv2(torch.relu(self.bn2(out)))
        return torch.cat([x, out], dim=1)


class Transition(nn.Sequential):
    """BN-ReLU-conv1x1 (compression) - 2x2 average pooling."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(nn.BatchNorm2d(in_channels), nn.ReLU(), nn.Conv2d(in_channels, out_channels, 1, bias=False),
                         nn.AvgPool2d(2))


class DenseNetBC(nn.Module):
    """DenseNet-BC: `depth` = 6k + 4 (40 gives k = 6 layers per block).

    final_relu=False leaves out the ReLU after the last BN (paper: for the cosine output layer).
    forward(x (B, in_channels, H, W)) -> (B, feature_dim) (132 for depth 40, growth 12).
    """

    def __init__(self, depth: int = 40, *, growth_rate: int = 12, compression: float = 0.5, in_channels: int = 3,
                 final_relu: bool = True):
        super().__init__()
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
            raise ValueError(f"depth must be 6k + 4 with k >= 1 (40, 100, ...), got {depth!r}")
        if not 0 < compression <= 1:
            raise ValueError(f"compression must be in (0, 1], got {compression!r}")
        per_block = (depth - 4) // 6
        channels = 2 * growth_rate
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 3, 1, 1, bias=False)]
        for block in range(3):
            for _ in range(per_block):
                layers.append(DenseLayer(channels, growth_rate))
                channels += growth_rate
            if block < 2:
                out = int(channels * compression)
                layers.append(Transition(channels, out))
                channels = out
        self.features = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(channels)
        self.final_relu, self.feature_dim = final_relu, channels
        init_convs(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pooled_features(self.bn(self.features(x)), self.final_relu)
