"""Backbones (feature extractors mu_theta) and the regression output network.

Images: `build_backbone`. Tabular classification: `build_feature_mlp` (mlp_small, mlp_wide; models/feature_mlp.py).

`build_backbone(name, in_channels, final_relu)` -> (module, feature_dim): module maps images (B, C, H, W)
to features (B, feature_dim). final_relu=False drops the last ReLU, as the paper does for the cosine
output layer (so features can be negative like the classifier weights and the dictionary keys).
"""
from __future__ import annotations

from torch import nn

from .densenet import DenseNetBC
from .digits import DigitsConvNet
from .feature_mlp import FEATURE_MLPS, FeatureMLP, build_feature_mlp
from .mlp import RegressionMLP
from .resnet import PreActResNet

BACKBONES = ("resnet29", "resnet56", "densenet40bc", "digits_cnn")


def build_backbone(name: str, *, in_channels: int = 3, final_relu: bool = True) -> tuple[nn.Module, int]:
    """The named feature extractor and its feature size."""
    if name == "resnet29":
        net = PreActResNet(29, in_channels=in_channels, final_relu=final_relu)
    elif name == "resnet56":
        net = PreActResNet(56, in_channels=in_channels, final_relu=final_relu)
    elif name == "densenet40bc":
        net = DenseNetBC(12, growth_rate=12, in_channels=in_channels, final_relu=final_relu)
    elif name == "digits_cnn":
        net = DigitsConvNet(in_channels=in_channels, final_relu=final_relu)
    else:
        raise ValueError(f"backbone must be one of {', '.join(map(repr, BACKBONES))}, got {name!r}")
    return net, net.feature_dim


__all__ = ["BACKBONES", "FEATURE_MLPS", "build_backbone", "build_feature_mlp", "PreActResNet", "DenseNetBC",
           "DigitsConvNet", "FeatureMLP", "RegressionMLP"]
