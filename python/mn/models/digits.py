"""A small convnet for the 8x8 sklearn digits: conv 32 - conv 64 - 2x2 max-pool - linear 128.

No batch norm: the net is small enough to train without it, and without it a data-parallel run computes
exactly what one process computes on the same global batch (per-rank BN statistics would differ).
"""
from __future__ import annotations

import torch
from torch import nn


class DigitsConvNet(nn.Module):
    """forward(x (B, in_channels, 8, 8)) -> features (B, 128).

    final_relu=False leaves out the ReLU after the last (linear) layer (paper: for the cosine output layer).
    """

    feature_dim = 128

    def __init__(self, *, in_channels: int = 1, final_relu: bool = True):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.fc = nn.Linear(64 * 4 * 4, self.feature_dim)
        self.final_relu = final_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (8, 8):
            raise ValueError(f"x must be (B, C, 8, 8) digits images, got {tuple(x.shape)}")
        out = self.fc(self.convs(x).flatten(1))
        return torch.relu(out) if self.final_relu else out
