"""A small convnet for the 8x8 sklearn digits: conv 32 - conv 64 - 2x2 max-pool - linear 128 ("digits_cnn"), and
its wider twin, conv 48 - conv 96 ("digits_cnn_wide": the capacity-matched vanilla of bench/paper_claims.py, at
least as many parameters as digits_cnn plus the MN dictionary and heads).

No batch norm: the net is small enough to train without it, and without it a data-parallel run computes
exactly what one process computes on the same global batch (per-rank BN statistics would differ).
"""
from __future__ import annotations

import torch
from torch import nn


class DigitsConvNet(nn.Module):
    """forward(x (B, in_channels, 8, 8)) -> features (B, 128).

    final_relu=False leaves out the ReLU after the last (linear) layer (paper: for the cosine output layer).
    widths: the two convolutions' channels.
    """

    feature_dim = 128

    def __init__(self, *, in_channels: int = 1, final_relu: bool = True, widths: tuple[int, int] = (32, 64)):
        super().__init__()
        c1, c2 = widths
        self.convs = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.fc = nn.Linear(c2 * 4 * 4, self.feature_dim)
        self.final_relu = final_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (8, 8):
            raise ValueError(f"x must be (B, C, 8, 8) digits images, got {tuple(x.shape)}")
        out = self.fc(self.convs(x).flatten(1))
        return torch.relu(out) if self.final_relu else out
