"""Pieces the convolutional backbones share."""
from __future__ import annotations

import torch
from torch import nn


def init_convs(module: nn.Module) -> None:
    """He-normal initialisation (fan out) of every convolution in `module`."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


def pooled_features(out: torch.Tensor, final_relu: bool) -> torch.Tensor:
    """(B, C, H, W) after the last BN -> (B, C): optional final ReLU (dropped for cosine heads), global average."""
    return (torch.relu(out) if final_relu else out).mean(dim=(2, 3))
