"""MAXL, the Meta AuXiliary Learning baseline of the paper's Table 1 (`mn train --method maxl`).

Liu, Davison and Johns, "Self-Supervised Generalisation with Meta Auxiliary Learning", NeurIPS 2019
(arXiv 1901.08933). Written here from the paper's method and the authors' PyTorch code, lorenmt/maxl,
`model_vgg_maxl.py` at commit 266f5b68df0e (master, 2021-12-19), read with the search tool; no code copied.

Two networks:
  multi-task network f_theta1   the shared backbone, a primary head over the C classes and an auxiliary head over
                                K = sum_c psi_c generated classes;
  label generator g_theta2      by default the same backbone architecture with its own weights, and a head over
                                the K classes; its "mask softmax" gives example i a soft label over the psi_{y_i}
                                slots of its primary class y_i (the hierarchy psi) and exactly zero elsewhere.
Each epoch runs two passes over the training set, as the code's loop (one shuffle each):
  (a) theta1 <- optimiser step on  mean_i [ l(f_pri(x_i), y_i) + l(f_aux(x_i), g(x_i, y_i)) ]  (labels fixed);
  (b) theta2 <- optimiser step on  mean_i l(f_pri(x_i; theta1+), y_i) + lambda * sum_k pbar_k log pbar_k,
      theta1+ = theta1 - alpha * grad_theta1 of the pass-(a) loss on the same batch (one look-ahead SGD step,
      kept in the graph: second order, through torch.func.functional_call and autograd.grad(create_graph=True)),
      pbar = the batch mean of the generated labels (minimising sum pbar log pbar maximises its entropy: the
      regulariser against labels that collapse onto one slot).
theta2 enters theta1+ only through the auxiliary term, so the generator learns labels whose auxiliary gradient
step lowers the primary loss. The look-ahead step takes the whole multi-task loss, as the code's does
(`grads = autograd.grad(train_loss, ...)`, train_loss = primary + auxiliary); the primary term only moves the
point where that effect is measured. Prediction is the primary head's; the generator is not used at test time.

Defaults and where they come from (TrainConfig's maxl_* fields):
  maxl_psi 5               code: `psi = [5]*20`, five auxiliary classes per primary class (CIFAR-100, 20 -> 100);
  maxl_gen_lr 1e-3         code: `gen_optimizer = optim.SGD(LabelGenerator.parameters(), lr=1e-3, ...)`;
  maxl_gen_weight_decay 5e-4   code: the same line, `weight_decay=5e-4`;
  maxl_lookahead_lr 0.01   code: `vgg_lr = 0.01`, the multi-task network's SGD rate, used for theta1+ and halved
                           with that network's schedule; here it follows the multi-task schedule the same way
                           (times lr_decay at each lr_milestones epoch);
  maxl_entropy_weight 0.2  code: `(torch.mean(train_loss1) + 0.2 * torch.mean(train_loss3)).backward()`;
  maxl_focal_gamma 2       code: `model_fit`, "apply focal loss", -(1 - p)^2 log p on both tasks (0: plain
                           cross-entropy); the look-ahead and meta losses use it too, as there.
Heads as in the code: Linear(d, d) - ReLU - Linear(d, out) on the backbone's features d (the generator's too),
the backbone with its final ReLU. Where the Meta-Neighborhoods paper fixes the shared protocol, the data set's
defaults in config.py apply to both networks instead of the code's SGD 0.01 / 200 epochs / batch 100: the
optimiser kind, epochs, batch size, learning-rate milestones and decay, gradient clipping; the multi-task
network trains at `lr` with `weight_decay`, the generator at maxl_gen_lr with maxl_gen_weight_decay, both
grouped by optim.build_optimizer (the heads' last layers, like the vanilla output layer, without decay).

Departures from the code, on purpose: labels are exactly zero outside the primary class's slots (the code's mask
is 1e-8 there; masked_fill with -inf here, so no mass and no gradient leaks); log-probabilities come from
log_softmax rather than log(softmax + 1e-20); no forward of pass (b) updates the multi-task network's batch-norm
statistics (the code's look-ahead forward runs on throw-away ones too, its plain forward there updates them).
Tabular classification (the spirals) has no image
backbone: the feature MLPs (mlp_small, mlp_wide; the generated sets' default) serve as one; --backbone mlp shares
the regression MLP's hidden layers (3 x 128) with two-layer heads; --backbone linear has no shared layers and
linear heads, so MAXL there is a linear classifier whose auxiliary task cannot help.

Under torchrun there is no DDP wrapper (its hooks fit neither pass): pass (a) all-reduces the multi-task
network's gradients as DDP would; pass (b) all-reduces the look-ahead gradient and the label sum inside the
graph (an autograd all-reduce), so each process's meta-gradient is its share of the global batch's and their
sum is what one process computes on the whole batch. Batch-norm statistics stay per process, as on CPU DDP.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..data import Prepared
from ..layers import DotClassifier
from ..models import BACKBONES, FEATURE_MLPS, RegressionMLP, build_backbone, build_feature_mlp
from .checkpoint import load_scheduler_state, scheduler_state
from .config import ConfigError, TrainConfig
from .loop import RUN_KEYS, Run, epoch_seed
from .optim import build_optimizer, build_scheduler, clip_gradients, refresh_groups, retarget_schedule, scheduled_lr

GEN_KEYS = ("gen_optimizer", "gen_scheduler")
ENTROPY_EPS = 1e-20          # inside the entropy's log, as the code's: pbar_k is exactly 0 for absent classes


# -- the hierarchy and the losses -------------------------------------------------------------------------------
def slot_mask(psi: list[int]) -> torch.Tensor:
    """(C, K) bool, K = sum(psi): row c is True on primary class c's psi[c] auxiliary slots, which follow each other
    in class order (class 0 gets slots 0..psi[0]-1, and so on)."""
    if not psi or any(isinstance(p, bool) or not isinstance(p, int) or p < 1 for p in psi):
        raise ValueError(f"psi must be a non-empty list of positive integers, got {psi!r}")
    owner = torch.repeat_interleave(torch.arange(len(psi)), torch.tensor(psi))
    return owner.unsqueeze(0) == torch.arange(len(psi)).unsqueeze(1)


def masked_softmax(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """softmax over the True entries of each row of `mask` (B, K), exactly 0 (value and gradient) elsewhere."""
    return torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=-1)


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float) -> torch.Tensor:
    """(B,) focal loss -sum_k t_k (1 - p_k)^gamma log p_k, p = softmax(logits); target (B,) class indices (one-hot
    t) or (B, K) soft labels. gamma = 0 is the cross-entropy."""
    logp = F.log_softmax(logits, dim=-1)
    if target.dim() == 1:
        logp = logp.gather(1, target.unsqueeze(1)).squeeze(1)
        return -((1 - logp.exp()) ** gamma * logp) if gamma else -logp
    weight = (1 - logp.exp()) ** gamma if gamma else 1.0
    return -(target * weight * logp).sum(-1)


def negative_entropy(pbar: torch.Tensor) -> torch.Tensor:
    """sum_k pbar_k log(pbar_k + 1e-20) of a distribution (K,): minimising it spreads the labels over the slots."""
    return (pbar * torch.log(pbar + ENTROPY_EPS)).sum()


# -- the networks ---------------------------------------------------------------------------------------------------
def head(in_features: int, out_features: int, *, linear: bool = False) -> nn.Module:
    """The code's head, Linear(d, d) - ReLU - Linear(d, out) (one Linear when `linear`). The last layer is a
    DotClassifier (a Linear), so weight decay skips it as it skips the vanilla output layer."""
    if linear:
        return DotClassifier(in_features, out_features)
    return nn.Sequential(nn.Linear(in_features, in_features), nn.ReLU(), DotClassifier(in_features, out_features))


class MultiTaskNet(nn.Module):
    """f_theta1: trunk (B, ...) -> (B, d) features, primary head -> (B, C), auxiliary head -> (B, K).
    forward(x) -> (primary logits, auxiliary logits)."""

    def __init__(self, trunk: nn.Module, features: int, num_classes: int, num_aux: int, *, linear: bool = False):
        super().__init__()
        self.trunk = trunk
        self.primary = head(features, num_classes, linear=linear)
        self.auxiliary = head(features, num_aux, linear=linear)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.trunk(x)
        return self.primary(z), self.auxiliary(z)


class LabelGenerator(nn.Module):
    """g_theta2: trunk -> head over the K auxiliary classes -> mask softmax by the primary label.
    forward(x, y (B,)) -> (B, K) soft labels: a distribution over y_i's psi[y_i] slots, exactly 0 elsewhere."""

    def __init__(self, trunk: nn.Module, features: int, psi: list[int], *, linear: bool = False):
        super().__init__()
        self.trunk = trunk
        self.psi = list(psi)
        self.register_buffer("mask", slot_mask(self.psi), persistent=False)
        self.head = head(features, sum(self.psi), linear=linear)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return masked_softmax(self.head(self.trunk(x)), self.mask[y])


class MaxlModel(nn.Module):
    """The multi-task network `net` and the label generator `generator` in one module, so the state dict (and so
    last.pt, best.pt, `mn eval`) holds both.

    forward(x, y=None) -> (primary logits (B, C), None or the per-example multi-task loss (B,) of pass (a):
    focal(primary, y) + focal(auxiliary, generated labels), the labels computed without gradient)."""

    def __init__(self, net: MultiTaskNet, generator: LabelGenerator, *, focal_gamma: float = 2.0):
        super().__init__()
        self.net, self.generator, self.focal_gamma = net, generator, focal_gamma

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None):
        primary, auxiliary = self.net(x)
        if y is None:
            return primary, None
        with torch.no_grad():
            labels = self.generator(x, y)
        return primary, multitask_losses(primary, auxiliary, y, labels, self.focal_gamma)


def multitask_losses(primary, auxiliary, y, labels, gamma: float) -> torch.Tensor:
    """(B,) focal(primary logits, y) + focal(auxiliary logits, soft labels)."""
    return focal_loss(primary, y, gamma) + focal_loss(auxiliary, labels, gamma)


# -- the look-ahead meta objective ----------------------------------------------------------------------------------
class _AllReduceSum(torch.autograd.Function):
    """all_reduce(SUM) with its adjoint (an all_reduce of the incoming gradients), for the graph of pass (b)."""

    @staticmethod
    def forward(ctx, tensor):
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        return grad


def _summed(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each tensor summed over the processes, in one differentiable all-reduce of their concatenation."""
    flat = _AllReduceSum.apply(torch.cat([t.reshape(-1) for t in tensors]))
    return [part.view_as(t) for part, t in zip(flat.split([t.numel() for t in tensors]), tensors)]


def meta_objective(model: MaxlModel, x: torch.Tensor, y: torch.Tensor, *, alpha: float, entropy_weight: float,
                   total: int | None = None, distributed: bool = False) -> torch.Tensor:
    """This process's share of the generator's objective on a batch, a scalar whose gradient with respect to the
    generator's parameters is the MAXL meta-gradient (of the global batch when `distributed`):

        J = (1/N) sum_i focal(f_pri(x_i; theta1+), y_i) + lambda * sum_k pbar_k log(pbar_k + 1e-20)
        theta1+ = theta1 - alpha * grad_theta1 (1/N) sum_i [focal(f_pri(x_i), y_i) + focal(f_aux(x_i), g(x_i, y_i))]
        pbar = (1/N) sum_i g(x_i, y_i)

    N = `total`, the global batch size (default: len(x)); `distributed`: sum the look-ahead gradient and the label
    sum over the processes inside the graph, each process adding lambda H / world. theta1+ is formed with
    torch.func.functional_call on the multi-task network, whose batch-norm statistics these forwards leave as they
    were (copies of its buffers are used). The gradient reaching the multi-task network is meaningless here:
    differentiate J with respect to the generator only (`inputs=`)."""
    net, gamma = model.net, model.focal_gamma
    total = len(x) if total is None else total
    world = dist.get_world_size() if distributed else 1
    labels = model.generator(x, y)
    names = [n for n, p in net.named_parameters() if p.requires_grad]
    params = dict(net.named_parameters())
    buffers = {n: b.clone() for n, b in net.named_buffers()}
    primary, auxiliary = functional_call(net, (params, buffers), (x,))
    inner = multitask_losses(primary, auxiliary, y, labels, gamma).sum() / total
    grads = list(torch.autograd.grad(inner, [params[n] for n in names], create_graph=True))
    if distributed:
        grads = _summed(grads)
    fast = dict(params, **{n: params[n] - alpha * g for n, g in zip(names, grads)})
    primary_after, _ = functional_call(net, (fast, buffers), (x,))
    label_sum = labels.sum(0)
    if distributed:
        (label_sum,) = _summed([label_sum])
    regulariser = entropy_weight * negative_entropy(label_sum / total) / world
    return focal_loss(primary_after, y, gamma).sum() / total + regulariser


def meta_gradient(model: MaxlModel, x: torch.Tensor, y: torch.Tensor, *, alpha: float,
                  entropy_weight: float) -> tuple[torch.Tensor, ...]:
    """d J / d theta2 (meta_objective on one process), one tensor per generator parameter, in parameters() order."""
    params = [p for p in model.generator.parameters() if p.requires_grad]
    return torch.autograd.grad(meta_objective(model, x, y, alpha=alpha, entropy_weight=entropy_weight), params)


# -- building -------------------------------------------------------------------------------------------------------
def _trunk(name: str, data: Prepared, key: str) -> tuple[nn.Module, int, bool]:
    """(trunk, feature size, whether the heads are linear) of backbone `name` for the data set."""
    tabular = data.data.kind != "image"
    if tabular and name == "linear":
        return nn.Identity(), data.input_shape[0], True
    if tabular and name == "mlp":
        mlp = RegressionMLP(data.input_shape[0], 1)
        return nn.Sequential(*list(mlp)[:-1]), mlp[-1].in_features, False
    if tabular and name in FEATURE_MLPS:
        trunk, features = build_feature_mlp(name, data.input_shape[0], final_relu=True)
        return trunk, features, False
    if not tabular and name in BACKBONES:
        trunk, features = build_backbone(name, in_channels=data.input_shape[0], final_relu=True)
        return trunk, features, False
    expected = (f"'mlp', 'linear' or a feature MLP ({', '.join(FEATURE_MLPS)})" if tabular
                else f"one of the image backbones ({', '.join(BACKBONES)})")
    raise ConfigError(f"{key} must be {expected} for {data.data.name}, got {name!r}")


def build_maxl(cfg: TrainConfig, data: Prepared) -> MaxlModel:
    """The MAXL model of cfg for a classification data set: multi-task network on cfg.backbone, label generator
    on cfg.maxl_generator (None: the same architecture, its own weights), psi = cfg.maxl_psi for every class."""
    if data.data.task != "classification":
        raise ConfigError(f"method 'maxl' needs a classification data set; {data.data.name} is a regression set")
    classes = data.data.num_outputs
    psi = [cfg.maxl_psi] * classes
    trunk, features, linear = _trunk(cfg.backbone, data, "backbone")
    net = MultiTaskNet(trunk, features, classes, sum(psi), linear=linear)
    trunk, features, linear = _trunk(cfg.maxl_generator or cfg.backbone, data, "maxl_generator")
    return MaxlModel(net, LabelGenerator(trunk, features, psi, linear=linear), focal_gamma=cfg.maxl_focal_gamma)


def lookahead_lr(cfg: TrainConfig, epochs_done: int) -> float:
    """alpha of an epoch: maxl_lookahead_lr times lr_decay per milestone passed (the multi-task schedule)."""
    return scheduled_lr(cfg.maxl_lookahead_lr, cfg, epochs_done)


def _generator_config(cfg: TrainConfig) -> TrainConfig:
    """cfg with the generator's rate and weight decay, for build_optimizer."""
    return dataclasses.replace(cfg, lr=cfg.maxl_gen_lr, weight_decay=cfg.maxl_gen_weight_decay)


def _reduce_gradients(module: nn.Module, world: int, *, average: bool) -> None:
    """Every gradient of `module` summed (or averaged) over the processes, in one all-reduce."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    if average:
        flat /= world
    for p, part in zip(params, flat.split([p.numel() for p in params])):
        p.grad.copy_(part.view_as(p))


# -- training -------------------------------------------------------------------------------------------------------
class MaxlRun(Run):
    """loop.Run for --method maxl (Run(cfg, ...) with cfg.method "maxl" is one): two optimisers and schedules,
    `optimizer` / `scheduler` for the multi-task network (`self.ddp` is that network, what they train) and
    `gen_optimizer` / `gen_scheduler` for the label generator; an epoch is pass (a) then pass (b) (module
    docstring). last.pt holds both networks (in "model"), both optimisers and both schedules, so a resume is exact;
    everything else (validation, best model, early stopping, files) is Run's."""

    STATE_KEYS = RUN_KEYS + GEN_KEYS

    def _build_training(self) -> None:
        cfg, ctx, model = self.cfg, self.ctx, self.model
        if ctx.world > 1:                         # what DDP does at wrapping: every process starts from rank 0's
            for tensor in model.state_dict().values():
                dist.broadcast(tensor, 0)
        self.ddp = model.net
        self.optimizer = build_optimizer(cfg, model.net)
        self.scheduler = build_scheduler(cfg, self.optimizer)
        self.gen_optimizer = build_optimizer(_generator_config(cfg), model.generator)
        self.gen_scheduler = build_scheduler(cfg, self.gen_optimizer)

    # -- checkpoints ----------------------------------------------------------------------------------------------
    def _state(self) -> dict:
        return {**super()._state(), "gen_optimizer": self.gen_optimizer.state_dict(),
                "gen_scheduler": scheduler_state(self.gen_scheduler)}

    def _load_extra(self, state: dict) -> None:
        """The generator's optimiser and schedule (rundir.py refuses a changed psi or generator backbone, and
        lists the maxl_* settings a resume applies)."""
        self.gen_optimizer.load_state_dict(state["gen_optimizer"])
        load_scheduler_state(self.gen_scheduler, state["gen_scheduler"])

    def _apply_changes(self, changed: set[str]) -> None:
        """Run's changes for the multi-task optimiser; the generator's: its rate (maxl_gen_lr, decayed by the
        schedule at this epoch) and milestones, its weight decay, momentum."""
        super()._apply_changes(changed)
        gen = _generator_config(self.cfg)
        if changed & {"lr_milestones", "lr_decay", "maxl_gen_lr"}:
            retarget_schedule(self.gen_optimizer, self.gen_scheduler, gen.lr, gen)
        if changed & {"momentum", "maxl_gen_weight_decay"}:
            refresh_groups(self.gen_optimizer, gen, self.model.generator)

    # -- training -------------------------------------------------------------------------------------------------
    def train_epoch(self) -> float:
        """Pass (a), then pass (b); returns the mean multi-task loss of pass (a) this process saw."""
        cfg, ctx, model = self.cfg, self.ctx, self.model
        seed = epoch_seed(self.seed, self.epoch)
        generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed + 1)
        model.train()
        desc = f"seed {self.seed} epoch {self.epoch + 1}/{cfg.epochs}"
        batches = self._batches(generator)
        bar = self.console.bar(batches, desc=desc + " (a)", total=len(batches), enabled=cfg.progress and ctx.main)
        total, count = 0.0, 0
        for batch in bar:
            x, y = self._share(batch, generator)
            _, losses = model(x, y)
            self.optimizer.zero_grad(set_to_none=True)
            (losses.sum() * (ctx.world / len(batch))).backward()
            if ctx.world > 1:
                _reduce_gradients(model.net, ctx.world, average=True)
            clip_gradients(model.net, cfg.grad_clip)
            self.optimizer.step()
            total += losses.detach().sum().item()
            count += len(y)
            bar.set_postfix_str(f"loss {total / count:.4f}", refresh=False)
        alpha = lookahead_lr(cfg, self.scheduler.last_epoch)
        params = [p for p in model.generator.parameters() if p.requires_grad]
        batches = self._batches(generator)
        bar = self.console.bar(batches, desc=desc + " (b)", total=len(batches), enabled=cfg.progress and ctx.main)
        for batch in bar:
            x, y = self._share(batch, generator)
            objective = meta_objective(model, x, y, alpha=alpha, entropy_weight=cfg.maxl_entropy_weight,
                                       total=len(batch), distributed=ctx.world > 1)
            self.gen_optimizer.zero_grad(set_to_none=True)
            torch.autograd.backward(objective, inputs=params)
            if ctx.world > 1:
                _reduce_gradients(model.generator, ctx.world, average=False)
            clip_gradients(model.generator, cfg.grad_clip)
            self.gen_optimizer.step()
        self.scheduler.step()
        self.gen_scheduler.step()
        return total / max(count, 1)
