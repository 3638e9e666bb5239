"""Backbones (feature extractors mu_theta) and the regression output network.

Images: `build_backbone`. Tabular classification: `build_feature_mlp` (mlp_small, mlp_wide; models/feature_mlp.py).

`build_backbone(name, in_channels, final_relu)` -> (module, feature_dim): module maps images (B, C, H, W)
to features (B, feature_dim). final_relu=False drops the last ReLU, as the paper does for the cosine
output layer (so features can be negative like the classifier weights and the dictionary keys).
"""
from __future__ import annotations

from torch import nn

from .densenet import DenseNetBC
from .feature_mlp import FEATURE_MLPS, FeatureMLP, build_feature_mlp
from .mlp import RegressionMLP
from .resnet import PreActResNet
from .small_cnn import SmallConvNet

BACKBONES = ("resnet29", "resnet56", "densenet40bc", "digits_cnn", "digits_cnn_wide", "mnist_cnn", "mnist_cnn_wide")
# The backbones that take one image size only (their linear layer reads a fixed map); the others pool globally.
INPUT_SIZES = {"digits_cnn": (8, 8), "digits_cnn_wide": (8, 8), "mnist_cnn": (28, 28), "mnist_cnn_wide": (28, 28)}
WIDE = (48, 96)     # the capacity-matched twins' channels (models/small_cnn.py)


def build_backbone(name: str, *, in_channels: int = 3, final_relu: bool = True) -> tuple[nn.Module, int]:
    """The named feature extractor and its feature size."""
    if name == "resnet29":
        net = PreActResNet(29, in_channels=in_channels, final_relu=final_relu)
    elif name == "resnet56":
        net = PreActResNet(56, in_channels=in_channels, final_relu=final_relu)
    elif name == "densenet40bc":
        net = DenseNetBC(layers_per_block=12, growth_rate=12, in_channels=in_channels, final_relu=final_relu)
    elif name in INPUT_SIZES:
        widths = WIDE if name.endswith("_wide") else (32, 64)
        net = SmallConvNet(INPUT_SIZES[name][0], in_channels=in_channels, final_relu=final_relu, widths=widths)
    else:
        raise ValueError(f"backbone must be one of {', '.join(map(repr, BACKBONES))}, got {name!r}")
    return net, net.feature_dim


__all__ = ["BACKBONES", "INPUT_SIZES", "FEATURE_MLPS", "build_backbone", "build_feature_mlp", "PreActResNet",
           "DenseNetBC", "SmallConvNet", "FeatureMLP", "RegressionMLP"]
