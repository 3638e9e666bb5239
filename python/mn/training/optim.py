"""Optimiser, step-decay schedule and gradient clipping (paper §Implementation details;
docs/design.md, "Facts from the authors' code")."""
from __future__ import annotations

import torch
from torch import nn

from .config import TrainConfig
from .methods import no_decay_parameters


def build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW (paper) or SGD with momentum; two parameter groups, weight decay only on the first."""
    skip = no_decay_parameters(model)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if id(p) not in skip], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if id(p) in skip], "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)


def build_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer):
    """Learning rate times lr_decay at each epoch in lr_milestones (stepped once per epoch)."""
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.lr_milestones), gamma=cfg.lr_decay)


def clip_gradients(model: nn.Module, clip: float | None) -> None:
    """Each gradient element into [-clip, clip] (the authors' elementwise clipping), if clip is set."""
    if clip is not None:
        nn.utils.clip_grad_value_(model.parameters(), clip)
