"""A small convnet for 28x28 grey images (the mnist5k set): conv 32 - 2x2 max-pool - conv 64 - 2x2 max-pool -
linear 128 ("mnist_cnn"), and its wider twin, conv 48 - conv 96 ("mnist_cnn_wide": the capacity-matched vanilla
of bench/paper_claims.py, at least as many parameters as mnist_cnn plus the MN dictionary and heads).

digits_cnn does not fit 28x28: its linear layer reads the 4x4 map of an 8x8 input. No batch norm, as digits_cnn
(a data-parallel run then computes what one process computes on the same global batch).
"""
from __future__ import annotations

import torch
from torch import nn


class MnistConvNet(nn.Module):
    """forward(x (B, in_channels, 28, 28)) -> features (B, 128).

    final_relu=False leaves out the ReLU after the last (linear) layer (paper: for the cosine output layer).
    widths: the two convolutions' channels.
    """

    feature_dim = 128

    def __init__(self, *, in_channels: int = 1, final_relu: bool = True, widths: tuple[int, int] = (32, 64)):
        super().__init__()
        c1, c2 = widths
        self.convs = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.fc = nn.Linear(c2 * 7 * 7, self.feature_dim)
        self.final_relu = final_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (28, 28):
            raise ValueError(f"x must be (B, C, 28, 28) images, got {tuple(x.shape)}")
        out = self.fc(self.convs(x).flatten(1))
        return torch.relu(out) if self.final_relu else out
