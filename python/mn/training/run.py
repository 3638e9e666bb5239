"""`mn train` and `mn eval` as functions: every seed (and, for regression sets, every cross-validation fold)
of a configuration, with a summary as in the paper's tables (mean ± std)."""
from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path

from ..data import load_dataset, prepare
from .checkpoint import CheckpointError, load_checkpoint, require_entries, require_finite_weights
from .config import ConfigError, TrainConfig, check_config, check_stored, from_stored
from .console import Console, number
from .distributed import Context, resolve_device, setup
from .loop import Run, evaluate
from .methods import build_model
from .rundir import grid_choice, write_config


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _folds(cfg: TrainConfig, has_test: bool) -> list[int | None]:
    if has_test:
        return [None]
    return [cfg.fold] if cfg.fold is not None else list(range(cfg.folds))


def train(cfg: TrainConfig, ctx: Context | None = None, *, log=print, console: Console | None = None,
          on_start=None) -> dict:
    """Runs every (seed, fold); returns {"runs": [result, ...], "summary": {...}}.

    With cfg.out_dir the main process writes OUT_DIR/config.json once the data is loaded and split (so a data
    error leaves no run behind; rundir.py), then each run's files. on_start(): called after that (main process).
    log(line): each run's result as a JSON line. console: epoch lines and bars (console.Console; None: bars
    only, on a terminal).

    Summary: mean ± sample std of the test metric over every (seed, fold) run (`n` of them, `over` says which):
    test accuracy over seeds (classification), test MSE over folds and seeds (regression, k-fold CV as in
    Table 2). Regression adds `cv_per_seed` (mean ± std over the folds of each seed) and `std_over_seeds`, the
    spread of the per-seed means.
    """
    ctx = ctx or setup(cfg.device)
    data = load_dataset(cfg.dataset, cfg.data_dir)
    metric = "test_accuracy" if data.task == "classification" else "test_mse"
    folds = _folds(cfg, data.test is not None)
    if console is None:
        console = Console()
    console.runs_left = len(cfg.seeds) * len(folds) * len(cfg.weight_decay_grid or [None])
    runs, started = [], False
    for seed in cfg.seeds:
        for fold in folds:
            prepared = prepare(data, val_fraction=cfg.val_fraction, fold=fold, folds=cfg.folds,
                               split_seed=cfg.split_seed, augment=cfg.augment)
            if cfg.weight_decay_grid is not None and prepared.val is None:     # before anything is written
                raise ConfigError("weight_decay_grid chooses on the validation split, and this run has none: set "
                                  "val_fraction > 0")
            if not started and ctx.main:
                if cfg.out_dir is not None:
                    write_config(cfg.out_dir, cfg)
                if on_start is not None:
                    on_start()
            started = True
            run_dir = None
            if cfg.out_dir is not None:
                run_dir = Path(cfg.out_dir) / f"seed{seed}" / ("" if fold is None else f"fold{fold}")
            result = fit_one(cfg, prepared, ctx, seed=seed, fold=fold, run_dir=run_dir, console=console)
            runs.append({"seed": seed, "fold": fold, **result})
            if ctx.main:
                log(json.dumps(runs[-1]))
    mean, std = mean_std([r[metric] for r in runs])
    summary = {"dataset": cfg.dataset, "method": cfg.method, "metric": metric, "seeds": cfg.seeds,
               "mean": mean, "std": std, "n": len(runs), "over": _over(cfg.seeds, folds)}
    if data.task == "regression":
        per_seed = [mean_std([r[metric] for r in runs if r["seed"] == s]) for s in cfg.seeds]
        summary["cv_per_seed"] = [dict(zip(("mean", "std"), m)) for m in per_seed]
        summary["std_over_seeds"] = mean_std([m for m, _ in per_seed])[1]
    return {"runs": runs, "summary": summary}


def fit_one(cfg: TrainConfig, prepared, ctx: Context, *, seed: int, fold: int | None, run_dir: Path | None,
            console: Console) -> dict:
    """One (seed, fold): a Run's result; with cfg.weight_decay_grid, one Run per value (into run_dir/wd<value>)
    and the result of the one with the best validation metric (accuracy, or MSE for regression), as the paper
    chooses weight decay per data set, plus `weight_decay` (the choice) and `grid` (each value's validation
    metric). The choice sees the validation split only; the test split is measured for every run as usual."""
    if cfg.weight_decay_grid is None:
        return Run(cfg, prepared, ctx, seed=seed, fold=fold, run_dir=run_dir, console=console).fit()
    key = "val_accuracy" if prepared.data.task == "classification" else "val_mse"
    tried = []
    for wd in cfg.weight_decay_grid:
        one = dataclasses.replace(cfg, weight_decay=wd, weight_decay_grid=None)
        where = None if run_dir is None else run_dir / f"wd{wd:g}"
        tried.append((wd, Run(one, prepared, ctx, seed=seed, fold=fold, run_dir=where, console=console).fit()))
    wd, result = grid_choice(tried)
    return {**result, "weight_decay": wd, "grid": [{"weight_decay": w, key: r[key]} for w, r in tried]}


def _over(seeds: list[int], folds: list[int | None]) -> str:
    """'3 seeds', '5 folds x 1 seed' -- the runs a summary's mean and std are taken over."""
    seeds_text = f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''}"
    if folds == [None]:
        return seeds_text
    return f"{len(folds)} fold{'s' if len(folds) > 1 else ''} x {seeds_text}"


def summary_line(summary: dict) -> str:
    """The summary as the line `mn train` prints last, the same numbers as its JSON:
    'diabetes vanilla: test_mse 0.7011 ± 0.1697 (mean ± std over 5 folds x 1 seed: seeds [0])'."""
    text = f"{summary['dataset']} {summary['method']}: {summary['metric']} {number(summary['mean'])}"
    if summary["n"] == 1:
        return text + f" (one run, seed {summary['seeds'][0]}: no spread to report)"
    return text + f" ± {number(summary['std'])} (mean ± std over {summary['over']}: seeds {summary['seeds']})"


def stored_fold(state: dict) -> int | None:
    """The cross-validation fold of a checkpoint's state (-1 there means none)."""
    return None if state["fold"] == -1 else state["fold"]


def _dataset_to_open(path, stored: str, dataset: str | None) -> str:
    """The data set to evaluate a checkpoint on. A checkpoint names its data set, but a path in it (csv:) is
    never opened on the file's say-so -- a checkpoint from elsewhere could point anywhere -- only a path the
    user passes (`dataset`, --dataset). `dataset` may only say where a csv: checkpoint's CSV is now."""
    if dataset is None:
        if stored.startswith("csv:"):
            raise CheckpointError(f"{path} was trained on {stored}; mn does not open a path a checkpoint names: "
                                  f"pass --dataset csv:<path> to say which CSV to evaluate on")
        return stored
    if dataset != stored and not (dataset.startswith("csv:") and stored.startswith("csv:")):
        raise ConfigError(f"--dataset {dataset!r} does not fit {path}, trained on {stored!r} (--dataset only says "
                          f"where a csv: checkpoint's CSV file is)")
    return dataset


def load_trained(path: str | Path, *, data_dir: str | None = None, device: str = "cpu", dataset: str | None = None):
    """A saved model with its data: (cfg, prepared splits, model in eval mode on `device`, checkpoint state).
    The model is rebuilt from the checkpoint's config and loaded with its weights; the splits are those it was
    trained on (seed-independent split_seed and fold).

    Paths come from the caller only: `data_dir` (else $MN_DATA or ./data, never the checkpoint's stored
    data_dir) and, for a csv: checkpoint, `dataset` ("csv:<path>", required). A checkpoint without weights,
    with NaN / Inf weights, or an unusable `device` is a one-line error naming it."""
    device = resolve_device(device)
    config, state = load_checkpoint(path)
    require_entries(path, state, ("model", "seed", "fold", "epoch"))
    require_finite_weights(path, state["model"])
    check_stored(config, path, resume=False)
    try:
        cfg = TrainConfig(**from_stored(config))
        check_config(cfg)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path} holds a configuration this mn cannot use ({e})") from e
    cfg.dataset = _dataset_to_open(path, cfg.dataset, dataset)
    cfg.data_dir = None if data_dir is None else str(data_dir)
    data = prepare(load_dataset(cfg.dataset, cfg.data_dir), val_fraction=cfg.val_fraction, fold=stored_fold(state),
                   folds=cfg.folds, split_seed=cfg.split_seed)
    model = build_model(cfg, data)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: its weights do not fit the model its config describes ({e})") from e
    return cfg, data, model.to(device).eval(), state


def evaluate_checkpoint(path: str | Path, *, split: str = "test", data_dir: str | None = None,
                        device: str = "cpu", dataset: str | None = None) -> dict:
    """Algorithm 2 on a saved model: rebuild it from the checkpoint's config, load the weights, adapt and
    predict on `split` ("test" or "val") of the same data split (`dataset`, `data_dir`: see load_trained)."""
    if split not in ("test", "val"):
        raise ValueError(f"split must be 'test' or 'val', got {split!r}")
    cfg, data, model, state = load_trained(path, data_dir=data_dir, device=device, dataset=dataset)
    target = data.test if split == "test" else data.val
    if target is None:
        raise ValueError(f"{cfg.dataset} has no {split} split in this configuration")
    metrics = evaluate(model, data, target, batch_size=cfg.eval_batch_size, device=resolve_device(device))
    return {"checkpoint": str(path), "dataset": cfg.dataset, "method": cfg.method, "split": split,
            "seed": state["seed"], "fold": stored_fold(state), "epoch": state["epoch"],
            **metrics}
