"""`mn table RUN_DIR [RUN_DIR ...]`: finished runs of `mn train` gathered into the layout of the paper's Table 1.

Rows are methods (the paper's nine, in its order: vanilla dot-sgd, dot-adamw, cos-sgd, cos-adamw, MAXL, ours
ft:1+S, ft:1+D, ft:3+S, ft:3+D; then any other method found), columns are (dataset, backbone). A cell is the mean
± sample standard deviation of the test metric over the finished (seed, fold) runs found for it, with their
count n; a cell without one is "–". Classification runs make a table of test accuracy (%); regression runs
(Table 2's metric) a table of test MSE, rows vanilla and ours, one column per data set (and its network); both
may be gathered in one call.

What a run writes (rundir.py, loop.py): RUN_DIR/config.json, and per seed (and fold) seed<S>/[fold<F>/]
metrics.jsonl, whose epoch records ({"event": "epoch", ...}) end, once the run is finished, with its result
record ({"event": "result", "test_accuracy" or "test_mse", ...}). A (seed, fold) without a result record is
unfinished: listed as such (with the epochs it has done), never averaged and never dropped silently.

Several run folders may fill one cell (e.g. one per seed) only if their configurations agree on everything but
where and what they ran (MAY_DIFFER); otherwise, or when one (seed, fold) comes twice, it is a TableError naming
both folders -- a cell never averages two different configurations.
"""
from __future__ import annotations

import re
from pathlib import Path

from .config import ConfigError
from .loop import read_records
from .run import mean_std
from .rundir import grid_choice, stored_config

# The paper's rows (Table 1; Table 2 for regression), in its order.
CLASSIFICATION_ROWS = ("vanilla dot-sgd", "vanilla dot-adamw", "vanilla cos-sgd", "vanilla cos-adamw", "MAXL",
                       "ours ft:1+S", "ours ft:1+D", "ours ft:3+S", "ours ft:3+D")
REGRESSION_ROWS = ("vanilla", "ours ft:1+S")
# Column order: the paper's backbones, each with its data sets (others after, by name).
DATASET_ORDER = ("cifar10", "cifar100", "cinic10", "tiny_imagenet", "music", "toms", "cte", "super", "gom")
BACKBONE_ORDER = ("densenet40bc", "resnet29", "resnet56")
# Settings that may differ between run folders filling one cell: which seeds and folds ran, and where.
MAY_DIFFER = ("seeds", "fold", "data_dir", "device", "eval_batch_size")
METRICS = {"classification": "test_accuracy", "regression": "test_mse"}
TABULAR = ("mlp", "linear")


class TableError(ValueError):
    """A folder given to `mn table` is not a run folder, or two folders conflict (the message names them)."""


def row_label(config: dict) -> str:
    """The row of a run's configuration: 'vanilla dot-sgd', 'MAXL', 'ours ft:3+D', ... (tabular networks have no
    output-layer choice: 'vanilla'); an optimiser other than AdamW for MN is added: 'ours ft:1+S (sgd)'."""
    method, optimizer = config.get("method"), config.get("optimizer", "adamw")
    if method == "maxl":
        return "MAXL"
    if method == "vanilla":
        if config.get("backbone") in TABULAR:
            return "vanilla" + ("" if optimizer == "adamw" else f" ({optimizer})")
        classifier = config.get("classifier", "cosine")
        return f"vanilla {'cos' if classifier == 'cosine' else classifier}-{optimizer}"
    if method == "mn":
        rate = "D" if config.get("inner_lr") == "diagonal" else "S"
        return f"ours ft:{config.get('inner_steps', 1)}+{rate}" + ("" if optimizer == "adamw" else f" ({optimizer})")
    return str(method)


def _number(name: str, prefix: str) -> int | None:
    found = re.fullmatch(prefix + r"(\d+)", name)
    return int(found.group(1)) if found else None


def _config(run_dir: Path) -> dict:
    if not run_dir.exists():
        raise TableError(f"{run_dir} does not exist: mn table takes the run folders of mn train")
    if not run_dir.is_dir():
        raise TableError(f"{run_dir} is a file, not a run folder of mn train")
    try:
        stored = stored_config(run_dir)
    except ConfigError as e:
        raise TableError(str(e)) from e
    if stored is None:
        hint = ""
        if _number(run_dir.name, "seed") is not None or _number(run_dir.name, "fold") is not None:
            hint = "; it looks like a seed or fold folder: pass the run folder above it"
        raise TableError(f"{run_dir} is not a run folder of mn train: it holds no config.json (nor "
                         f"seed*/[fold*/]last.pt){hint}")
    return stored[0]


def _task(records: list[dict]) -> str | None:
    for task, metric in METRICS.items():
        if any(metric in r or "val_" + metric[5:] in r for r in records):
            return task
    return None


def _outcome(folder: Path) -> tuple[dict | None, int, str | None]:
    """What folder/metrics.jsonl says: (its result record or None, the last epoch it recorded or 0, its task)."""
    path = folder / "metrics.jsonl"
    records = read_records(path) if path.is_file() else []
    results = [r for r in records if r.get("event") == "result" and any(m in r for m in METRICS.values())]
    done = [r["epoch"] for r in records if r.get("event") == "epoch" and isinstance(r.get("epoch"), int)]
    return (results[-1] if results else None), max(done, default=0), _task(records)


def _grid(folder: Path, config: dict) -> list[tuple[float, Path]]:
    """(weight decay, folder) of a weight-decay grid's runs below a (seed, fold) folder (wd<value>/, run.fit_one),
    in the grid's order: the configuration's weight_decay_grid, then any other wd folder found."""
    found = {}
    for sub in folder.glob("wd*/"):
        try:
            found[float(sub.name[2:])] = sub
        except ValueError:
            continue
    grid = config.get("weight_decay_grid") if isinstance(config.get("weight_decay_grid"), list) else []
    order = [wd for wd in grid if isinstance(wd, (int, float))] + sorted(set(found) - set(grid))
    return [(wd, found.get(wd, folder / f"wd{wd:g}")) for wd in order]


def read_run(run_dir) -> dict:
    """One run folder: {run_dir, config, row, task, finished: [{seed, fold, value}], unfinished: [{seed, fold,
    epochs_done, epochs}]}. task: 'classification' / 'regression' from its records (None when it has none).

    A (seed, fold) trained over a weight-decay grid (seed<S>/[fold<F>/]wd<V>/, `--weight-decay-grid`) is
    finished when every value's run is; its value is the test metric of the run with the best validation
    metric (ties: the first in the grid), as `mn train` chooses, and its entry adds `weight_decay`, the value
    chosen. Its unfinished runs are listed one per value, with `weight_decay`."""
    run_dir = Path(run_dir)
    config = _config(run_dir)
    folders = {}                                 # (seed, fold) -> its folder (which may not exist yet)
    for seed_dir in run_dir.glob("seed*/"):
        seed = _number(seed_dir.name, "seed")
        if seed is None or not seed_dir.is_dir():
            continue
        fold_dirs = [(f, _number(f.name, "fold")) for f in seed_dir.glob("fold*/") if f.is_dir()]
        for folder, fold in [(f, n) for f, n in fold_dirs if n is not None] or [(seed_dir, None)]:
            folders[(seed, fold)] = folder
    folds = [None]
    if any(fold is not None for _, fold in folders):
        folds = [config["fold"]] if isinstance(config.get("fold"), int) else list(range(config.get("folds", 5)))
    seeds = config.get("seeds") if isinstance(config.get("seeds"), list) else []
    for seed in seeds:                           # what the configuration asks for and has not started
        for fold in folds:
            folders.setdefault((seed, fold), run_dir / f"seed{seed}" / ("" if fold is None else f"fold{fold}"))
    finished, unfinished, task = [], [], None
    for (seed, fold), folder in sorted(folders.items(), key=lambda item: (item[0][0], item[0][1] or 0)):
        grid = [] if (folder / "metrics.jsonl").is_file() else _grid(folder, config)
        parts = [(wd, *_outcome(sub)) for wd, sub in grid] or [(None, *_outcome(folder))]
        task = task or next((t for *_, t in parts if t), None)
        if all(result is not None for _, result, _, _ in parts):
            wd, result, _, _ = grid_choice(parts)
            value = next(result[m] for m in METRICS.values() if m in result)
            finished.append({"seed": seed, "fold": fold, "value": value,
                             **({} if wd is None else {"weight_decay": wd})})
            continue
        for wd, result, done, _ in parts:
            if result is None:
                unfinished.append({"seed": seed, "fold": fold, "epochs_done": done, "epochs": config.get("epochs"),
                                   **({} if wd is None else {"weight_decay": wd})})
    return {"run_dir": str(run_dir), "config": config, "row": row_label(config), "task": task,
            "finished": finished, "unfinished": unfinished}


def _rank(value, order) -> tuple:
    return (order.index(value), "") if value in order else (len(order), str(value))


def _check_same_cell(a: dict, b: dict, cell: str) -> None:
    changed = [k for k in sorted(set(a["config"]) & set(b["config"]))
               if k not in MAY_DIFFER and a["config"][k] != b["config"][k]]
    if changed:
        shown = ", ".join(f"{k} ({a['config'][k]!r} vs {b['config'][k]!r})" for k in changed)
        raise TableError(f"{a['run_dir']} and {b['run_dir']} are both {cell} but their configurations differ: "
                         f"{shown}; a cell averages runs of one configuration: pass only one of them")


def gather(run_dirs) -> dict:
    """The tables of the runs in `run_dirs` (a folder given twice counts once), as `mn table --json` prints them:
    {run_dirs, tables: [{task, metric, rows, columns: [{dataset, backbone}], cells: [{row, dataset, backbone,
    mean, std, n, runs: [{run_dir, seed, fold, value}]}]}], unfinished: [{run_dir, seed, fold, epochs_done,
    epochs}]}; runs of a weight-decay grid add weight_decay (read_run). `cells` holds the cells with n >= 1 (the
    others are missing); std is the sample standard deviation (0 when n = 1); values are fractions (accuracy)
    or MSE as metrics.jsonl holds them."""
    runs, seen = [], set()
    for run_dir in run_dirs:
        key = Path(run_dir).resolve()
        if key not in seen:
            seen.add(key)
            runs.append(read_run(run_dir))
    cells: dict[tuple, dict] = {}                # (task, row, dataset, backbone) -> cell
    owner: dict[tuple, dict] = {}                # same key -> the first run folder in it (for the conflict check)
    for run in runs:
        if run["task"] is None:
            continue
        key = (run["task"], run["row"], run["config"].get("dataset"), run["config"].get("backbone"))
        cell_name = f"{key[1]} on {key[2]} / {key[3]}"
        if key in owner:
            _check_same_cell(owner[key], run, cell_name)
        owner.setdefault(key, run)
        cell = cells.setdefault(key, {"row": key[1], "dataset": key[2], "backbone": key[3], "runs": []})
        for result in run["finished"]:
            twice = [r for r in cell["runs"] if (r["seed"], r["fold"]) == (result["seed"], result["fold"])]
            if twice:
                fold = "" if result["fold"] is None else f" fold {result['fold']}"
                raise TableError(f"seed {result['seed']}{fold} of {cell_name} is in both {twice[0]['run_dir']} and "
                                 f"{run['run_dir']}: pass only one of them")
            cell["runs"].append({"run_dir": run["run_dir"], **result})
    tables = []
    for task, default_rows in (("classification", CLASSIFICATION_ROWS), ("regression", REGRESSION_ROWS)):
        keys = [k for k in cells if k[0] == task]
        if not keys:
            continue
        rows = list(default_rows) + sorted({k[1] for k in keys} - set(default_rows))
        columns = sorted({(k[2], k[3]) for k in keys},
                         key=lambda c: (_rank(c[1], BACKBONE_ORDER), _rank(c[0], DATASET_ORDER)))
        found = []
        for key in sorted(keys, key=lambda k: (rows.index(k[1]), columns.index((k[2], k[3])))):
            cell = cells[key]
            values = [r["value"] for r in cell["runs"]]
            if values:
                mean, std = mean_std(values)
                found.append({**{k: cell[k] for k in ("row", "dataset", "backbone")}, "mean": mean, "std": std,
                              "n": len(values), "runs": cell["runs"]})
        tables.append({"task": task, "metric": METRICS[task], "rows": rows,
                       "columns": [{"dataset": d, "backbone": b} for d, b in columns], "cells": found})
    unfinished = [{"run_dir": run["run_dir"], **u} for run in runs for u in run["unfinished"]]
    return {"run_dirs": [run["run_dir"] for run in runs], "tables": tables, "unfinished": unfinished}


def _value(task: str, cell: dict) -> str:
    if task == "classification":
        mean, spread = f"{100 * cell['mean']:.2f}", f"{100 * cell['std']:.2f}"
    else:
        mean, spread = f"{cell['mean']:#.4g}", f"{cell['std']:#.2g}"     # significant digits, zeros kept
    return (mean if cell["n"] == 1 else f"{mean} ± {spread}") + f" (n={cell['n']})"


def markdown(gathered: dict) -> str:
    """The tables of gather() as Markdown, then the unfinished runs."""
    out = []
    for table in gathered["tables"]:
        task = table["task"]
        what = "test accuracy (%)" if task == "classification" else "test MSE"
        over = "seeds" if task == "classification" else "folds and seeds"
        out += [f"{what}: mean ± sample std over the finished runs ({over}), n of them; – none finished", ""]
        columns = [(c["dataset"], c["backbone"]) for c in table["columns"]]
        by_key = {(c["row"], c["dataset"], c["backbone"]): c for c in table["cells"]}
        out.append("| method | " + " | ".join(f"{d} / {b}" for d, b in columns) + " |")
        out.append("| --- |" + " --- |" * len(columns))
        for row in table["rows"]:
            texts = [_value(task, by_key[(row, d, b)]) if (row, d, b) in by_key else "–" for d, b in columns]
            out.append(f"| {row} | " + " | ".join(texts) + " |")
        out.append("")
    if not gathered["tables"]:
        out += ["No finished run in the given folders.", ""]
    if gathered["unfinished"]:
        out.append("Unfinished (no result record yet; not in the table):")
        for u in gathered["unfinished"]:
            where = f"seed {u['seed']}" + ("" if u["fold"] is None else f" fold {u['fold']}")
            where += f" weight decay {u['weight_decay']:g}" if "weight_decay" in u else ""
            done = "not started" if u["epochs_done"] == 0 else f"epoch {u['epochs_done']} of {u['epochs']}"
            out.append(f"- {u['run_dir']} {where}: {done}")
        out.append("")
    return "\n".join(out)
