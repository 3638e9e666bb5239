"""`mn plot RUN_DIR [RUN_DIR ...] --out curves.png`: training curves of `mn train` runs, from their metrics.jsonl.

Left panel: loss per epoch, training (solid) and validation (dashed). Right panel: the validation metric
(accuracy, or MSE for regression). One colour per RUN_DIR. A folder with several seeds or folds is drawn as
their mean per epoch, with a band from their minimum to their maximum. RUN_DIR is a run folder
(OUT_DIR, holding seed*/[fold*/]metrics.jsonl) or one of its seed / fold folders.
"""
from __future__ import annotations

import statistics
from pathlib import Path

from .analysis.plotting import new_figure, save_png
from .training.config import ConfigError
from .training.console import metric_name
from .training.loop import read_records
from .training.rundir import grid_choice, stored_config


class PlotError(ValueError):
    """A folder given to `mn plot` holds no curves (the message names it)."""


def metrics_files(run_dir: Path) -> list[Path]:
    """RUN_DIR/metrics.jsonl, else those of its seed*/ and seed*/fold*/ folders. A (seed, fold) trained over a
    weight-decay grid (wd*/ below it) gives the value `mn train` kept (rundir.grid_choice) once every value has
    finished, and every value's file before that."""
    if (run_dir / "metrics.jsonl").is_file():
        return [run_dir / "metrics.jsonl"]
    files = []
    for folder in sorted(f for pattern in ("seed*/", "seed*/fold*/") for f in run_dir.glob(pattern)):
        if (folder / "metrics.jsonl").is_file():
            files.append(folder / "metrics.jsonl")
            continue
        grid = sorted(p for p in folder.glob("wd*/metrics.jsonl") if p.is_file())
        results = [(path, next((r for r in reversed(read_records(path)) if r.get("event") == "result"), None))
                   for path in grid]
        if grid and all(result is not None for _, result in results):
            grid = [grid_choice(results)[0]]
        files += grid
    return files


def read_run(run_dir) -> dict:
    """{run_dir, metric ('accuracy' or 'mse'), aux (whether the training loss holds MN's auxiliary term),
    series: [{file, epoch, train_loss, val_loss, val_metric}]} of one run folder; PlotError when it holds none."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PlotError(f"{run_dir} is not a folder: mn plot takes the run folders of mn train")
    files = metrics_files(run_dir)
    if not files:
        raise PlotError(f"{run_dir} holds no metrics.jsonl (looked in it, seed*/ and seed*/fold*/): not a run "
                        f"folder of mn train")
    series, metrics = [], set()
    for path in files:
        records = [r for r in read_records(path) if r.get("event") == "epoch" and isinstance(r.get("epoch"), int)]
        if not records:
            continue
        metric = next(filter(None, map(metric_name, records)), None)
        metrics.add(metric)
        series.append({"file": str(path), "epoch": [r["epoch"] for r in records],
                       "train_loss": [r.get("train_loss") for r in records],
                       "val_loss": [r.get("val_loss") for r in records],
                       "val_metric": [r.get(f"val_{metric}") for r in records]})
    if not series:
        raise PlotError(f"{run_dir}: its metrics.jsonl hold no epoch records yet")
    metrics.discard(None)
    if len(metrics) > 1:
        raise PlotError(f"{run_dir} mixes classification and regression runs")
    config = _config(run_dir.resolve())
    # MN's image and feature-MLP heads add an auxiliary loss; MAXL's training loss holds its auxiliary task's.
    aux = config.get("method") == "maxl" or (config.get("method") == "mn" and config.get("aux_weight", 0) > 0
                                             and not _tabular(config))
    return {"run_dir": str(run_dir), "metric": metrics.pop() if metrics else None, "aux": aux, "series": series}


def _config(run_dir: Path) -> dict:
    """The run's configuration (rundir.stored_config): in RUN_DIR, or above it when RUN_DIR is a seed or fold
    folder; {} if none. A config.json that is not valid JSON is a PlotError naming it."""
    folders = [run_dir]
    if run_dir.name.startswith("fold"):
        folders += [run_dir.parent, run_dir.parent.parent]
    elif run_dir.name.startswith("seed"):
        folders.append(run_dir.parent)
    for folder in folders:
        try:
            stored = stored_config(folder)
        except ConfigError as e:
            raise PlotError(str(e)) from e
        if stored is not None:
            return stored[0]
    return {}


def _tabular(config: dict) -> bool:
    return config.get("backbone") in ("mlp", "linear")


def aggregate(series: list[dict], key: str) -> tuple[list[int], list[float], list[float], list[float]]:
    """(epochs, mean, min, max) of `key` over the series at each epoch any of them has a value for."""
    by_epoch: dict[int, list[float]] = {}
    for s in series:
        for epoch, value in zip(s["epoch"], s[key]):
            if value is not None:
                by_epoch.setdefault(epoch, []).append(value)
    epochs = sorted(by_epoch)
    return (epochs, [statistics.fmean(by_epoch[e]) for e in epochs], [min(by_epoch[e]) for e in epochs],
            [max(by_epoch[e]) for e in epochs])


def labels(run_dirs: list[str]) -> list[str]:
    """Each folder's name, or its path where two names are the same."""
    names = [Path(d).resolve().name or str(d) for d in run_dirs]
    return [n if names.count(n) == 1 else str(d) for n, d in zip(names, run_dirs)]


def plot_curves(run_dirs: list, out) -> dict:
    """Draws the curves of `run_dirs` into the PNG `out`; returns {out, runs: [{run_dir, label, series, metric,
    last_epoch, last: {train_loss, val_loss, val_<metric>} (means of the last epoch)}]}."""
    runs = [read_run(d) for d in run_dirs]
    metrics = {r["metric"] for r in runs} - {None}
    if len(metrics) > 1:
        raise PlotError("the runs mix classification (accuracy) and regression (MSE): plot them separately")
    metric = metrics.pop() if metrics else None
    fig = new_figure(11, 4.2)
    ax_loss, ax_metric = fig.subplots(1, 2)
    record = {"out": str(out), "runs": []}
    for i, (run, label) in enumerate(zip(runs, labels([str(d) for d in run_dirs]))):
        color, several = f"C{i % 10}", len(run["series"]) > 1
        last = {}
        for ax, key, style, name in ((ax_loss, "train_loss", "-", "train" + (" (+ aux. loss)" if run["aux"] else "")),
                                     (ax_loss, "val_loss", "--", "validation"),
                                     (ax_metric, "val_metric", "-", "validation")):
            epochs, mean, low, high = aggregate(run["series"], key)
            if not epochs:
                continue
            ax.plot(epochs, mean, style, color=color, marker="o" if len(epochs) < 20 else None, markersize=3,
                    label=f"{label}: {name}" + (f" (mean of {len(run['series'])})" if several else ""))
            if several:
                ax.fill_between(epochs, low, high, color=color, alpha=0.15, linewidth=0)
            last[key if key != "val_metric" else f"val_{metric}"] = mean[-1]
        record["runs"].append({"run_dir": run["run_dir"], "label": label, "series": len(run["series"]),
                               "metric": run["metric"], "last_epoch": max(max(s["epoch"]) for s in run["series"]),
                               "last": last})
    ax_loss.set(xlabel="epoch", ylabel="loss per example" + (" (MSE)" if metric == "mse" else " (cross-entropy)"),
                title="loss")
    shown = {"accuracy": "accuracy", "mse": "MSE", None: "metric (no validation split)"}[metric]
    better = {"accuracy": " (higher is better)", "mse": " (lower is better)", None: ""}[metric]
    ax_metric.set(xlabel="epoch", ylabel=f"validation {shown}{better}", title=f"validation {shown}")
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize=8)
    if any(r["series"] > 1 for r in record["runs"]):
        fig.suptitle("lines: mean over a folder's seeds / folds; bands: their minimum to maximum", fontsize=9)
    save_png(fig, Path(out))
    return record
