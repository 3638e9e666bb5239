"""Pieces the convolutional backbones share."""
from __future__ import annotations

import torch
from torch import nn


def init_convs(module: nn.Module) -> None:
    """Glorot-uniform initialisation of every convolution in `module`, as the authors' conv_layer
    (tf.contrib.layers.xavier_initializer_conv2d: fans of kernel size x channels, as torch's)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)


def batch_norm(channels: int) -> nn.BatchNorm2d:
    """Batch norm as the authors' (tf.contrib batch_norm: epsilon 1e-3, decay 0.9, i.e. torch's momentum 0.1)."""
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.1)


def pooled_features(out: torch.Tensor, final_relu: bool) -> torch.Tensor:
    """(B, C, H, W) after the last BN -> (B, C): optional final ReLU (dropped for cosine heads), global average."""
    return (torch.relu(out) if final_relu else out).mean(dim=(2, 3))
