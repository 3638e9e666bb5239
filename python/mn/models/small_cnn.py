"""The small convnets of the grey-image sets: conv 32 - conv 64 - 2x2 max-pool - linear 128 for the 8x8 sklearn
digits ("digits_cnn"), with a 2x2 max-pool after the first conv too for 28x28 images (mnist5k: "mnist_cnn"), and
their wider twins, conv 48 - conv 96 ("digits_cnn_wide", "mnist_cnn_wide": the capacity-matched vanilla of
bench/paper_claims.py, at least as many parameters as the narrow net plus the MN dictionary and heads).

No batch norm: the nets are small enough to train without it, and without it a data-parallel run computes
exactly what one process computes on the same global batch (per-rank BN statistics would differ).
"""
from __future__ import annotations

import torch
from torch import nn


class SmallConvNet(nn.Module):
    """forward(x (B, in_channels, size, size)) -> features (B, 128).

    size: the one image size the linear layer fits (8 or 28; past 8 the first conv is pooled too).
    final_relu=False leaves out the ReLU after the last (linear) layer (paper: for the cosine output layer).
    widths: the two convolutions' channels.
    """

    feature_dim = 128

    def __init__(self, size: int, *, in_channels: int = 1, final_relu: bool = True,
                 widths: tuple[int, int] = (32, 64)):
        super().__init__()
        c1, c2 = widths
        first_pool = [nn.MaxPool2d(2)] if size > 8 else []
        self.size = size
        self.convs = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, padding=1), nn.ReLU(), *first_pool,
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        side = size // (4 if first_pool else 2)
        self.fc = nn.Linear(c2 * side * side, self.feature_dim)
        self.final_relu = final_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.size, self.size):
            raise ValueError(f"x must be (B, C, {self.size}, {self.size}) images, got {tuple(x.shape)}")
        out = self.fc(self.convs(x).flatten(1))
        return torch.relu(out) if self.final_relu else out
