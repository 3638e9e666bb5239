"""Training and evaluation loops for one (seed, fold) run: epochs, validation, best-model selection, early
stopping, checkpoints with exact resume, metrics as JSON lines.

Determinism: every source of randomness of epoch e (batch order, augmentation, entry-dropout seeds) is drawn
from generators seeded by (seed, e), so a run resumed from the checkpoint of epoch e continues exactly as the
uninterrupted run would have. Under DDP every process draws the same global batches and takes its share;
its loss is sum(its per-example losses) * world / global batch size, so DDP's gradient average is the
gradient of the global-batch mean, whatever the shares' sizes. (Entry-dropout masks hash the row index within
a process's share, so with dropout on, DDP draws other, equally random masks than one process would.)
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from torch import nn

from ..data import Prepared, Split
from .checkpoint import (
    CheckpointError,
    append_line,
    load_checkpoint,
    load_scheduler_state,
    require_entries,
    require_finite_weights,
    save_checkpoint,
    scheduler_state,
    write_lines,
)
from .config import TrainConfig, config_to_dict
from .console import Console
from .distributed import Context, unwrap, wrap
from .methods import build_model, per_example_loss
from .optim import build_optimizer, build_scheduler, clip_gradients, refresh_groups, retarget_schedule
from .rundir import check_resume


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919) % (2**62)


def global_batches(n: int, batch_size: int, generator: torch.Generator, min_size: int = 1) -> list[torch.Tensor]:
    """A shuffled partition of range(n) into batches of batch_size (the last may be smaller; batches smaller
    than min_size, the number of processes, are dropped so every process gets at least one example)."""
    batches = torch.randperm(n, generator=generator).split(batch_size)
    return [b for b in batches if len(b) >= min_size]


@torch.no_grad()
def evaluate(model: nn.Module, data: Prepared, split: Split, *, batch_size: int, device) -> dict:
    """Metrics of `model` (eval mode: the dictionary is frozen, adaptation still runs, Algorithm 2) on `split`:
    loss (mean CE or MSE of the predictions), plus accuracy for classification or mse for regression."""
    model = unwrap(model)
    was_training = model.training
    model.eval()
    task, total, correct = data.data.task, 0.0, 0
    for start in range(0, len(split), batch_size):
        x = data.inputs(split.x[start:start + batch_size]).to(device)
        y = split.y[start:start + batch_size].to(device)
        prediction, _ = model(x)
        total += per_example_loss(prediction, y, task).sum().item()
        if task == "classification":
            correct += (prediction.argmax(1) == y).sum().item()
    model.train(was_training)
    metrics = {"loss": total / len(split)}
    metrics["accuracy" if task == "classification" else "mse"] = (correct / len(split) if task == "classification"
                                                                 else metrics["loss"])
    return metrics


def _better(task: str, new: dict, best: dict | None) -> bool:
    """Best model selection: highest validation accuracy (classification), lowest validation MSE (regression)."""
    if best is None:
        return True
    return new["accuracy"] > best["accuracy"] if task == "classification" else new["mse"] < best["mse"]


# What a run's last.pt must hold for a resume ("history", the epoch records, is newer and optional).
RUN_KEYS = ("seed", "fold", "epoch", "model", "optimizer", "scheduler", "bad_epochs", "best_val_loss", "best_epoch",
            "best_metrics", "best_model")


def best_checkpoint(state: dict) -> dict:
    """best.pt's content, a function of last.pt's state alone: the best model's weights, its epoch and
    metrics. So best.pt can always be rebuilt from last.pt (Run._recover), and equals what it was when written."""
    return {"seed": state["seed"], "fold": state["fold"], "epoch": state["best_epoch"], "model": state["best_model"],
            "best_epoch": state["best_epoch"], "best_metrics": state["best_metrics"]}


def _holds(path: Path, wanted: dict) -> bool:
    """Whether the checkpoint at `path` is `wanted` (same seed, fold, epoch and weights)."""
    try:
        _, state = load_checkpoint(path)
    except CheckpointError:
        return False
    if any(state.get(k) != wanted[k] for k in ("seed", "fold", "epoch")):
        return False
    model, ours = state.get("model"), wanted["model"]
    return (isinstance(model, dict) and model.keys() == ours.keys()
            and all(torch.equal(model[k], ours[k].cpu()) for k in ours))


def read_records(path: Path) -> list[dict]:
    """The JSON records of a metrics.jsonl; a torn line (a kill mid-append) is skipped."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


class Run:
    """One training run (one seed, one fold) of `cfg` on `data`, in context `ctx`.

    run_dir: where last.pt, best.pt and metrics.jsonl go (None: nothing written, nothing resumed).
    console: what the run shows while it trains (console.Console: epoch lines, bars; None: bars only, on a
    terminal with cfg.progress). Only the main process shows anything.

    Surviving a kill at any moment: each epoch writes last.pt first -- the commit point, holding the whole state
    including the best model and every epoch's metrics record -- then best.pt (when the epoch is the best), then
    the metrics line; each file write is atomic and fsync'd. A kill leaves best.pt and metrics.jsonl at most one
    step behind last.pt, and a resume rebuilds both from last.pt before training on (`_recover`). A fresh run
    starts metrics.jsonl anew; a resumed run that had already finished logs its result record only once.
    """

    STATE_KEYS = RUN_KEYS           # what last.pt must hold (a subclass's _state adds its own)

    def __new__(cls, cfg: TrainConfig, *args, **kwargs):
        """Run(cfg, ...) of --method maxl is a maxl.MaxlRun (two networks and optimisers, two passes an epoch)."""
        if cls is Run and cfg.method == "maxl":
            from .maxl import MaxlRun
            cls = MaxlRun
        return super().__new__(cls)

    def __init__(self, cfg: TrainConfig, data: Prepared, ctx: Context, *, seed: int, fold: int | None = None,
                 run_dir: Path | None = None, console: Console | None = None):
        self.cfg, self.data, self.ctx, self.seed, self.fold = cfg, data, ctx, seed, fold
        self.console = console if console is not None else Console()
        self.run_dir = None if run_dir is None else Path(run_dir)
        torch.manual_seed(seed)                                  # initial weights and dictionary
        self.model = build_model(cfg, data).to(ctx.device)
        self._build_training()
        self.epoch, self.bad_epochs, self.best_val_loss = 0, 0, float("inf")
        self.best, self.best_epoch, self.best_state = None, 0, None
        self.history: list[dict] = []          # the epoch records written to metrics.jsonl, kept in last.pt
        self._fresh_log, self._result_logged = True, False
        if cfg.resume and self.run_dir is not None and (self.run_dir / "last.pt").exists():
            self._resume(self.run_dir / "last.pt")

    def _build_training(self) -> None:
        """What trains self.model: self.ddp (DDP under torchrun), its optimiser and schedule."""
        self.ddp = wrap(self.model, self.ctx)
        self.optimizer = build_optimizer(self.cfg, self.ddp)
        self.scheduler = build_scheduler(self.cfg, self.optimizer)

    # -- checkpoints -----------------------------------------------------------------------------------
    def _state(self) -> dict:
        return {"seed": self.seed, "fold": -1 if self.fold is None else self.fold, "epoch": self.epoch,
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": scheduler_state(self.scheduler), "bad_epochs": self.bad_epochs,
                "best_val_loss": self.best_val_loss,
                "best_epoch": self.best_epoch, "best_metrics": self.best or {},
                "best_model": self.best_state if self.best_state is not None else self.model.state_dict(),
                "history": self.history}

    def _resume(self, path: Path) -> None:
        """Continue from last.pt: checked first (complete, this seed and fold, finite weights, the same model and
        data settings) so a bad file or a mismatched flag is a one-line error; changed optimiser and schedule
        settings are applied from the next epoch (`_apply_changes`); then best.pt and metrics.jsonl are brought
        in line with it."""
        stored, state = load_checkpoint(path, map_location=self.ctx.device)
        require_entries(path, state, self.STATE_KEYS)
        changes = {k for k, _, _ in check_resume(stored, self.cfg, path)}
        fold = -1 if self.fold is None else self.fold
        if state["seed"] != self.seed or state["fold"] != fold:
            raise CheckpointError(f"{path} is a checkpoint of seed {state['seed']}, fold {state['fold']}, "
                                  f"not seed {self.seed}, fold {fold}")
        require_finite_weights(path, state["model"], "model")
        require_finite_weights(path, state["best_model"], "best_model")
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            load_scheduler_state(self.scheduler, state["scheduler"])
            self._load_extra(state)
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{path}: its state does not fit the model and optimiser of this configuration "
                                  f"({type(e).__name__}: {e})") from e
        self.epoch, self.bad_epochs, self.best_epoch = state["epoch"], state["bad_epochs"], state["best_epoch"]
        self._apply_changes(changes)
        self.best_val_loss = state["best_val_loss"]
        self.best = state["best_metrics"] or None
        self.best_state = state["best_model"]
        self.history = list(state.get("history") or [])
        self._fresh_log = False
        if self.ctx.main:
            self._recover(state, had_history="history" in state)

    def _load_extra(self, state: dict) -> None:
        """Loads what a subclass's _state keeps beside Run's (its STATE_KEYS); Run keeps nothing more."""

    def _apply_changes(self, changed: set[str]) -> None:
        """Puts the settings of self.cfg that differ from the checkpoint's into the loaded optimiser and schedule:
        the learning rate as the schedule gives it at this epoch (cfg.lr decayed by cfg.lr_decay once per
        milestone passed), weight decay (on the decayed group), momentum. The rest (epochs, patience,
        grad_clip, steps per epoch) is read from cfg as training goes. Nothing is touched without a change, so
        a plain resume continues bit for bit."""
        if changed & {"lr", "lr_milestones", "lr_decay"}:
            retarget_schedule(self.optimizer, self.scheduler, self.cfg.lr, self.cfg)
        if changed & {"weight_decay", "momentum"}:
            refresh_groups(self.optimizer, self.cfg, self.ddp)

    def _recover(self, state: dict, *, had_history: bool) -> None:
        """Makes best.pt and metrics.jsonl agree with last.pt (`state`), whatever moment a kill struck:
        best.pt is rewritten unless it already holds last.pt's best model; metrics.jsonl is rewritten as
        last.pt's epoch records (checkpoints from before the history was kept: the file's own records up to
        last.pt's epoch, once each), plus the result record only if the run is finished and had logged it."""
        best = best_checkpoint(state)
        if not _holds(self.run_dir / "best.pt", best):
            save_checkpoint(self.run_dir / "best.pt", config=config_to_dict(self.cfg), state=best)
        old = read_records(self.run_dir / "metrics.jsonl")
        if not had_history:
            by_epoch = {}
            for r in old:
                if r.get("event") == "epoch" and isinstance(r.get("epoch"), int) and r["epoch"] <= self.epoch:
                    by_epoch.setdefault(r["epoch"], r)
            self.history = [by_epoch[e] for e in sorted(by_epoch)]
        # This run's result record: in a file whose epoch records are this run's (last.pt's history; a fresh run
        # killed before its first line leaves an older run's file), after the final epoch's record, naming this
        # seed, fold, epoch count and best epoch.
        epochs = [r for r in old if r.get("event") == "epoch"]
        ours = epochs == self.history if had_history else True
        last_epoch = max((k for k, r in enumerate(old) if r.get("event") == "epoch" and r.get("epoch") == self.epoch),
                         default=len(old))
        mine = {"seed": self.seed, "fold": self.fold, "epochs": self.epoch, "best_epoch": self.best_epoch}
        results = [r for r in old[last_epoch + 1:]
                   if r.get("event") == "result" and all(r.get(k) == v for k, v in mine.items())]
        results = results[:1] if self.finished() and ours else []
        self._result_logged = bool(results)
        write_lines(self.run_dir / "metrics.jsonl", [json.dumps(r) for r in self.history + results])

    def _save(self) -> None:
        """last.pt, the commit point, then best.pt when this epoch is the best (see the class docstring)."""
        if self.run_dir is None or not self.ctx.main:
            return
        config, state = config_to_dict(self.cfg), self._state()
        save_checkpoint(self.run_dir / "last.pt", config=config, state=state)
        if self.best_epoch == self.epoch:
            save_checkpoint(self.run_dir / "best.pt", config=config, state=best_checkpoint(state))

    def _line(self, record: dict) -> dict:
        return {"seed": self.seed, "fold": self.fold, **record}

    def _log(self, line: dict) -> None:
        """Appends a record to metrics.jsonl (a fresh run's first record replaces what an earlier run left)."""
        if self.run_dir is None or not self.ctx.main:
            return
        path = self.run_dir / "metrics.jsonl"
        if self._fresh_log:
            write_lines(path, [json.dumps(line)])
            self._fresh_log = False
        else:
            append_line(path, json.dumps(line))

    def finished(self) -> bool:
        """Trained to cfg.epochs, or stopped early (cfg.patience epochs without a better validation loss)."""
        return self.epoch >= self.cfg.epochs or (self.cfg.patience is not None
                                                 and self.bad_epochs >= self.cfg.patience)

    # -- training --------------------------------------------------------------------------------------
    def train_epoch(self) -> float:
        """One pass over the training split; returns the mean training loss this process saw."""
        cfg, ctx = self.cfg, self.ctx
        seed = epoch_seed(self.seed, self.epoch)
        generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed + 1)                     # entry-dropout seeds are drawn from the global generator
        batches = self._batches(generator)
        self.ddp.train()
        total, count = 0.0, 0
        bar = self.console.bar(batches, desc=f"seed {self.seed} epoch {self.epoch + 1}/{cfg.epochs}",
                               total=len(batches), enabled=cfg.progress and ctx.main)
        for batch in bar:
            x, y = self._share(batch, generator)
            _, losses = self.ddp(x, y)
            loss = losses.sum() * (ctx.world / len(batch))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            clip_gradients(self.model, cfg.grad_clip)
            self.optimizer.step()
            total += losses.detach().sum().item()
            count += len(y)
            bar.set_postfix_str(f"loss {total / count:.4f}", refresh=False)      # the epoch's running mean
        self.scheduler.step()
        return total / max(count, 1)

    def _batches(self, generator: torch.Generator) -> list[torch.Tensor]:
        """The epoch's global batches (index tensors), at most max_steps_per_epoch of them."""
        batches = global_batches(len(self.data.train), self.cfg.batch_size, generator, min_size=self.ctx.world)
        return batches if self.cfg.max_steps_per_epoch is None else batches[:self.cfg.max_steps_per_epoch]

    def _share(self, batch: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """This process's (x, y) of a global batch, on its device. Every process prepares (augments) the whole
        batch, so the generator stays in step with a one-process run, then keeps its share."""
        ctx, data = self.ctx, self.data
        x = data.inputs(data.train.x[batch], generator=generator).tensor_split(ctx.world)[ctx.rank]
        y = data.train.y[batch].tensor_split(ctx.world)[ctx.rank]
        return x.to(ctx.device), y.to(ctx.device)

    def fit(self, on_epoch=None) -> dict:
        """Train to cfg.epochs (or early stop), validating each epoch; returns the final metrics of the best
        model (by validation; the last model where there is no validation split) on the test split.
        on_epoch(run): called after each epoch's validation and checkpoint (e.g. to record the dictionary)."""
        cfg, task = self.cfg, self.data.data.task
        if self.ctx.main:
            self.console.start_run()
        while not self.finished():
            start = time.perf_counter()
            lr = self.optimizer.param_groups[0]["lr"]            # the rate this epoch trains with
            train_loss = self.train_epoch()
            self.epoch += 1
            record = {"event": "epoch", "epoch": self.epoch, "lr": lr, "train_loss": train_loss}
            if self.data.val is not None:
                val = evaluate(self.model, self.data, self.data.val, batch_size=cfg.eval_batch_size,
                               device=self.ctx.device)
                record.update({f"val_{k}": v for k, v in val.items()})
                if _better(task, val, self.best):
                    self.best, self.best_epoch = val, self.epoch
                    self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
                # Early stopping watches the validation loss (paper: 10 epochs without improvement).
                improved = val["loss"] < self.best_val_loss
                self.best_val_loss = min(self.best_val_loss, val["loss"])
                self.bad_epochs = 0 if improved else self.bad_epochs + 1
            else:
                self.best_epoch, self.best_state = self.epoch, None
            record["seconds"] = time.perf_counter() - start
            self.history.append(self._line(record))
            self._save()                        # last.pt (with the record), best.pt, then the metrics line
            self._log(self.history[-1])
            if self.ctx.main:
                self.console.epoch(self, record)
            if on_epoch is not None:
                on_epoch(self)
        return self.finish()

    def finish(self) -> dict:
        """Loads the best model and measures it on the test split (and logs the result, once per run: a
        resumed run that had already finished and logged it does not log it again)."""
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        test = evaluate(self.model, self.data, self.data.test, batch_size=self.cfg.eval_batch_size,
                        device=self.ctx.device)
        result = {"event": "result", "epochs": self.epoch, "best_epoch": self.best_epoch,
                  **{f"test_{k}": v for k, v in test.items()},
                  **{f"val_{k}": v for k, v in (self.best or {}).items()}}
        if not self._result_logged:
            self._log(self._line(result))
            self._result_logged = True
        return result
