"""Optimiser, step-decay schedule and gradient clipping (paper §Implementation details;
docs/design.md, "Training recipe"), and putting changed settings into a resumed optimiser and schedule."""
from __future__ import annotations

import collections

import torch
from torch import nn

from .config import TrainConfig
from .methods import no_decay_parameters


def decayed_parameters(cfg: TrainConfig, model: nn.Module) -> set[int]:
    """ids of the parameters weight decay applies to, as in the authors' code: AdamW decays every parameter
    outside the dictionary and the output layers (their decay_var_list: all but the 'memory' scope, so batch-norm
    scales and shifts too); SGD decays the weights of the convolutions and linear layers only (their L2
    regulariser sits on the conv kernels; ours reaches an MLP backbone's linear weights likewise)."""
    skip = no_decay_parameters(model)
    if cfg.optimizer == "adamw":
        return {id(p) for p in model.parameters() if id(p) not in skip}
    return {id(m.weight) for m in model.modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and id(m.weight) not in skip}


def build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW (paper) or SGD with Nesterov momentum (authors' code); two parameter groups, weight decay only on
    the first (decayed_parameters). cfg.weight_decay is in torch's form (docs/design.md, "Training recipe")."""
    decayed = decayed_parameters(cfg, model)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if id(p) in decayed], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if id(p) not in decayed], "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)


def build_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer):
    """Learning rate times lr_decay at each epoch in lr_milestones (stepped once per epoch)."""
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.lr_milestones), gamma=cfg.lr_decay)


def scheduled_lr(base_lr: float, cfg: TrainConfig, epochs_done: int) -> float:
    """base_lr decayed by cfg.lr_decay once per milestone passed after `epochs_done` epochs (build_scheduler's)."""
    return base_lr * cfg.lr_decay ** sum(1 for m in cfg.lr_milestones if m <= epochs_done)


def retarget_schedule(optimizer: torch.optim.Optimizer, scheduler, base_lr: float, cfg: TrainConfig) -> None:
    """A resumed MultiStepLR made as build_scheduler would make it for base_lr and cfg's milestones and decay,
    its groups at the rate it gives at the epoch reached."""
    groups = optimizer.param_groups
    scheduler.base_lrs = [base_lr] * len(groups)
    scheduler.milestones = collections.Counter(cfg.lr_milestones)
    scheduler.gamma = cfg.lr_decay
    lr = scheduled_lr(base_lr, cfg, scheduler.last_epoch)
    for group in groups:
        group["initial_lr"], group["lr"] = base_lr, lr
    scheduler._last_lr = [lr] * len(groups)


def refresh_groups(optimizer: torch.optim.Optimizer, cfg: TrainConfig, model: nn.Module) -> None:
    """A resumed optimiser's weight decay, momentum and Nesterov flag as build_optimizer(cfg, model) sets them."""
    for group, new in zip(optimizer.param_groups, build_optimizer(cfg, model).param_groups):
        for key in ("weight_decay", "momentum", "nesterov"):
            if key in group:
                group[key] = new[key]


def clip_gradients(model: nn.Module, clip: float | None) -> None:
    """Each gradient element into [-clip, clip] (the authors' elementwise clipping), if clip is set."""
    if clip is not None:
        nn.utils.clip_grad_value_(model.parameters(), clip)
