"""CIFAR-style pre-activation bottleneck ResNet (He et al. 2016, "Identity Mappings"): depth 9k + 2.

ResNet-29 (k = 3) and ResNet-56 (k = 6), as in the authors' code: a 3x3 stem with 16 channels, three stages
of k bottleneck units (widths 16, 32, 64, expansion 4, strides 1, 2, 2), a final BN-ReLU and global average
pooling, so the features are 256-d. Input (B, C, 32, 32) (any H, W >= 4 work) -> features (B, 256).
"""
from __future__ import annotations

import torch
from torch import nn

from ._common import init_convs, pooled_features


class PreActBottleneck(nn.Module):
    """BN-ReLU-conv1x1, BN-ReLU-conv3x3 (stride), BN-ReLU-conv1x1 (x4), plus the (projected) identity."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int):
        super().__init__()
        out = width * self.expansion
        self.bn1, self.conv1 = nn.BatchNorm2d(in_channels), nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(width), nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn3, self.conv3 = nn.BatchNorm2d(width), nn.Conv2d(width, out, 1, bias=False)
        self.shortcut = (nn.Conv2d(in_channels, out, 1, stride, bias=False)
                         if stride != 1 or in_channels != out else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = torch.relu(self.bn1(x))
        # The projection reads the pre-activated input, as in the pre-activation paper's reference code.
        identity = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv1(pre)
        out = self.conv2(torch.relu(self.bn2(out)))
        out = self.conv3(torch.relu(self.bn3(out)))
        return out + identity


class PreActResNet(nn.Module):
    """Pre-activation bottleneck ResNet for 32x32 images; `depth` = 9k + 2 (29, 56, 110, ...).

    final_relu=False leaves out the ReLU after the last BN (paper: for the cosine output layer).
    forward(x (B, in_channels, H, W)) -> (B, 256).
    """

    def __init__(self, depth: int, *, in_channels: int = 3, final_relu: bool = True):
        super().__init__()
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 11 or (depth - 2) % 9:
            raise ValueError(f"depth must be 9k + 2 with k >= 1 (29, 56, ...), got {depth!r}")
        k = (depth - 2) // 9
        self.stem = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        layers, channels = [], 16
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            for unit in range(k):
                layers.append(PreActBottleneck(channels, width, stride if unit == 0 else 1))
                channels = width * PreActBottleneck.expansion
        self.stages = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(channels)
        self.final_relu, self.feature_dim = final_relu, channels
        init_convs(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pooled_features(self.bn(self.stages(self.stem(x))), self.final_relu)
