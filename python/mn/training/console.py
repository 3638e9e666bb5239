"""What `mn train` shows while it trains (rank 0 only): one line per epoch and, on a terminal, a progress bar.

  seed 0 | epoch 3/30 | train loss 0.4321 | val accuracy 0.9514 | best 0.9583 (epoch 2) | lr 1.0e-03 | 1.2 s | ETA 0:32

The ETA covers every (seed, fold) run the command has left: the mean epoch time so far times the epochs left
(an upper bound when early stopping ends runs sooner). Bars are drawn only when stdout and stderr are both
terminals, so a log file never gets the carriage returns a bar redraws itself with.
"""
from __future__ import annotations

import sys


def is_terminal() -> bool:
    """Whether stdout and stderr are both terminals (bars go to stderr; a redirected stdout means a log)."""
    return all(getattr(s, "isatty", lambda: False)() for s in (sys.stdout, sys.stderr))


def duration(seconds: float) -> str:
    """0:07, 12:34, 1:02:03."""
    seconds = max(0, round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def metric_name(record: dict) -> str | None:
    """The validation metric of a record: 'accuracy' (classification) or 'mse' (regression), None without one."""
    return next((m for m in ("accuracy", "mse") if f"val_{m}" in record), None)


class Console:
    """Epoch lines and progress bars of one `mn train` command. write(text) prints a line (None: no lines).

    runs: how many (seed, fold) runs the command trains, so the ETA counts those not started yet."""

    bar_interval = 0.1      # seconds between redraws of a bar (tqdm's mininterval)

    def __init__(self, write=None, *, bars: bool | None = None, runs: int = 1):
        self.write = write
        self.bars = is_terminal() if bars is None else bars
        self.runs_left = runs           # this run and those after it
        self.trained, self.seconds = 0, 0.0

    def start_run(self) -> None:
        """Called when a (seed, fold) run starts (fresh or resumed)."""
        self.runs_left = max(self.runs_left - 1, 0)

    def bar(self, iterable, *, desc: str, total: int, enabled: bool = True):
        """A tqdm bar over `iterable` where bars are on (and `enabled`), else `iterable` itself; either way with
        set_postfix_str(text), which puts text (the running loss) after the bar."""
        if not (self.bars and enabled):
            return _NoBar(iterable)
        from tqdm import tqdm
        return tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True, file=sys.stderr,
                    mininterval=self.bar_interval)

    def epoch(self, run, record: dict) -> None:
        """The epoch line of `record` (an epoch record of metrics.jsonl) of `run` (a loop.Run)."""
        self.trained += 1
        self.seconds += record["seconds"]
        if self.write is None:
            return
        cfg = run.cfg
        left = (0 if run.finished() else cfg.epochs - run.epoch) + cfg.epochs * self.runs_left
        parts = [f"seed {run.seed}" + ("" if run.fold is None else f" fold {run.fold}"),
                 f"epoch {run.epoch}/{cfg.epochs}", f"train loss {number(record['train_loss'])}"]
        metric = metric_name(record)
        if metric is None:
            parts.append("no validation split")
        else:
            parts.append(f"val {metric} {number(record['val_' + metric])}")
            parts.append(f"best {number(run.best[metric])} (epoch {run.best_epoch})")
        parts += [f"lr {record['lr']:.1e}", f"{record['seconds']:.1f} s",
                  f"ETA {duration(self.seconds / self.trained * left)}"]
        self.write(" | ".join(parts))


def number(x: float) -> str:
    """Four decimals (accuracies, standardised MSE), or four significant digits with an exponent past 1e4."""
    return f"{x:.4f}" if abs(x) < 1e4 else f"{x:.4e}"


class _NoBar:
    """The iterable unchanged, with the bar's set_postfix_str as a no-op."""

    def __init__(self, iterable):
        self.iterable = iterable

    def __iter__(self):
        return iter(self.iterable)

    def set_postfix_str(self, *args, **kwargs) -> None:
        pass
