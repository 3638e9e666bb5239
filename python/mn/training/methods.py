"""The methods: vanilla baselines and Meta-Neighborhoods, built for a data set, behind one interface.

Every model is an nn.Module with forward(x, y=None) -> (prediction, per-example loss or None):
prediction (B, C) logits or (B, out) regression outputs, loss (B,). Per-example losses let the training
loop weight each process's share of a global batch exactly (see loop.py).

  image classification, vanilla: backbone (with last ReLU) + dot layer, or backbone (no last ReLU) + cosine layer
  image classification, MN:      backbone (no last ReLU) + MetaNeighborhoodsHead + auxiliary cosine head (Eq. 14)
  tabular classification with a feature backbone (mlp_small, mlp_wide): as image classification, the backbone
                                 an MLP (models/feature_mlp.py), so vanilla and MN share it as in Table 1
  tabular (spirals, regression): output network alone, or wrapped by the generic MetaNeighborhoods layer with
                                 its dictionary in input space (the paper's regression setting, Eq. 9)
  classification, MAXL:          multi-task network + label generator (training/maxl.py, the Table 1 baseline)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data import Prepared
from ..generic import MetaNeighborhoods
from ..layers import CosineClassifier, DotClassifier, MetaNeighborhoodsClassifier, MetaNeighborhoodsHead
from ..models import BACKBONES, FEATURE_MLPS, RegressionMLP, build_backbone, build_feature_mlp
from .config import ConfigError, TrainConfig


def per_example_loss(prediction: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
    """(B,) cross-entropy for class indices, mean squared error over outputs for regression targets."""
    if task == "classification":
        return F.cross_entropy(prediction, y, reduction="none")
    return ((prediction - y) ** 2).mean(-1)


class Vanilla(nn.Module):
    """net(x) -> prediction; net is backbone + output layer, or the tabular output network."""

    def __init__(self, net: nn.Module, task: str):
        super().__init__()
        self.net, self.task = net, task

    def forward(self, x, y=None):
        prediction = self.net(x)
        return prediction, None if y is None else per_example_loss(prediction, y, self.task)


class MNImageClassifier(nn.Module):
    """mn.MetaNeighborhoodsClassifier; loss = CE(adapted logits) + aux_weight * CE(auxiliary logits)."""

    def __init__(self, classifier: MetaNeighborhoodsClassifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, x, y=None):
        out = self.classifier(x)
        if y is None:
            return out.logits, None
        loss = F.cross_entropy(out.logits, y, reduction="none")
        if out.aux_logits is not None:
            loss = loss + self.classifier.aux_weight * F.cross_entropy(out.aux_logits, y, reduction="none")
        return out.logits, loss


class MNTabular(Vanilla):
    """mn.MetaNeighborhoods around the output network (spirals' linear classifier, the regression MLP)."""


def _tabular_net(cfg: TrainConfig, in_features: int, outputs: int) -> nn.Module:
    if cfg.backbone == "linear":
        return nn.Linear(in_features, outputs)
    if cfg.backbone == "mlp":
        return RegressionMLP(in_features, outputs)
    raise ConfigError(f"backbone must be 'mlp' or 'linear' for the tabular data set (or, for classification, one "
                      f"of {', '.join(map(repr, FEATURE_MLPS))}), got {cfg.backbone!r}")


def build_model(cfg: TrainConfig, data: Prepared) -> nn.Module:
    """The model of cfg.method for the prepared data set (shapes, classes and target range read from it)."""
    task, outputs = data.data.task, data.data.num_outputs
    if cfg.method == "maxl":                # multi-task network + label generator (training/maxl.py)
        from .maxl import build_maxl
        return build_maxl(cfg, data)
    if data.data.kind == "image" or cfg.backbone in FEATURE_MLPS:
        if data.data.kind == "image" and (task != "classification" or cfg.backbone not in BACKBONES):
            raise ConfigError(f"backbone must be one of the image backbones for {data.data.name}, got {cfg.backbone!r}")
        if data.data.kind != "image" and task != "classification":
            raise ConfigError(f"backbone {cfg.backbone!r} is for tabular classification; {data.data.name} is a "
                              f"regression set: use 'mlp' or 'linear'")
        if data.data.kind == "image":
            make = lambda final_relu: build_backbone(cfg.backbone, in_channels=data.input_shape[0],
                                                     final_relu=final_relu)
        else:
            make = lambda final_relu: build_feature_mlp(cfg.backbone, data.input_shape[0], final_relu=final_relu)
        if cfg.method == "vanilla":
            backbone, dim = make(cfg.classifier == "dot")
            layer = DotClassifier(dim, outputs) if cfg.classifier == "dot" else CosineClassifier(dim, outputs)
            return Vanilla(nn.Sequential(backbone, layer), task)
        backbone, dim = make(False)
        head = MetaNeighborhoodsHead(dim, outputs, num_entries=cfg.num_entries, gamma=cfg.gamma,
                                     inner_lr="feature" if cfg.inner_lr == "diagonal" else "scalar",
                                     inner_lr_init=cfg.inner_lr_init, inner_steps=cfg.inner_steps,
                                     entry_dropout=cfg.entry_dropout, backend="auto", key_init_std=cfg.key_init_std,
                                     value_scale=cfg.value_scale, value_init_std=cfg.value_init_std)
        return MNImageClassifier(MetaNeighborhoodsClassifier(backbone, head, aux_weight=cfg.aux_weight))
    in_features = data.input_shape[0]
    net = _tabular_net(cfg, in_features, outputs)
    if cfg.method == "vanilla":
        return Vanilla(net, task)
    regression = task == "regression"
    y = data.train.y
    value_range = (y.min().item(), y.max().item()) if regression else (0.0, 1.0)
    layer = MetaNeighborhoods(net, in_features, outputs, cfg.num_entries, similarity=cfg.similarity,
                              inner_loss="mse" if regression else "ce", gamma=cfg.gamma,
                              inner_lr="elementwise" if cfg.inner_lr == "diagonal" else "scalar",
                              inner_lr_init=cfg.inner_lr_init, inner_steps=cfg.inner_steps,
                              entry_dropout=cfg.entry_dropout, value_range=value_range,
                              key_init_std=cfg.key_init_std, value_scale=cfg.value_scale,
                              value_init_std=cfg.value_init_std)
    return MNTabular(layer, task)


def no_decay_parameters(model: nn.Module) -> set[int]:
    """ids of the parameters kept out of weight decay (authors' code): the dictionary, the classification
    output layers (incl. tau and the auxiliary head), the inner rates. The regression MLP wrapped by the
    generic layer keeps its decay (the paper tunes decay for it)."""
    out = set()
    for module in model.modules():
        if isinstance(module, (MetaNeighborhoodsHead, CosineClassifier, DotClassifier)):
            out.update(id(p) for p in module.parameters())
        elif isinstance(module, MetaNeighborhoods):
            out.update(id(p) for p in (module.keys, module.value_params, *module.inner_lr.parameters()))
            if isinstance(module.net, nn.Linear):        # the linear classifier of a tabular classification task
                out.update(id(p) for p in module.net.parameters())
    return out
