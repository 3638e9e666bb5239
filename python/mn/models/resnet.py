"""CIFAR-style pre-activation bottleneck ResNet (He et al. 2016, "Identity Mappings"): depth 9k + 2.

ResNet-29 (k = 3) and ResNet-56 (k = 6) as the authors' code builds them (network/resnet.py, the Keras CIFAR
ResNet v2 layout): a 3x3 conv-BN-ReLU stem with 16 channels, then three stages of k bottleneck units,
BN-ReLU-conv1x1 (width), BN-ReLU-conv3x3 (width), BN-ReLU-conv1x1 (out), with (width, out) = (16, 64),
(64, 128), (128, 256). The first unit of a stage projects its input with a 1x1 conv and carries the stage's
stride 2 (stages 2 and 3) in its first 1x1 conv; the very first unit skips its first BN-ReLU (the stem ends in
one). A final BN and global average pooling give 256-d features. Input (B, C, H, W), H, W >= 4.
"""
from __future__ import annotations

import torch
from torch import nn

from ._common import batch_norm, init_convs, pooled_features

STAGES = ((16, 64), (64, 128), (128, 256))      # (bottleneck width, output channels) per stage


class PreActBottleneck(nn.Module):
    """[BN-ReLU]-conv1x1 (stride), BN-ReLU-conv3x3, BN-ReLU-conv1x1, plus the identity or a 1x1 projection of
    the raw input (as the authors' code)."""

    def __init__(self, in_channels: int, width: int, out_channels: int, stride: int, *, preactivate: bool = True,
                 project: bool = False):
        super().__init__()
        self.bn1 = batch_norm(in_channels) if preactivate else None
        self.conv1 = nn.Conv2d(in_channels, width, 1, stride, bias=False)
        self.bn2, self.conv2 = batch_norm(width), nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn3, self.conv3 = batch_norm(width), nn.Conv2d(width, out_channels, 1, bias=False)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False) if project else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x if self.bn1 is None else torch.relu(self.bn1(x)))
        out = self.conv2(torch.relu(self.bn2(out)))
        out = self.conv3(torch.relu(self.bn3(out)))
        return out + (x if self.shortcut is None else self.shortcut(x))


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
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False), batch_norm(16), nn.ReLU())
        units, channels = [], 16
        for stage, (width, out) in enumerate(STAGES):
            for unit in range(k):
                first = unit == 0
                units.append(PreActBottleneck(channels, width, out, 2 if first and stage > 0 else 1,
                                              preactivate=not (first and stage == 0), project=first))
                channels = out
        self.stages = nn.Sequential(*units)
        self.bn = batch_norm(channels)
        self.final_relu, self.feature_dim = final_relu, channels
        init_convs(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pooled_features(self.bn(self.stages(self.stem(x))), self.final_relu)
