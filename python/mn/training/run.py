"""`mn train` and `mn eval` as functions: every seed (and, for regression sets, every cross-validation fold)
of a configuration, with a summary as in the paper's tables (mean ± std)."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from ..data import load_dataset, prepare
from .checkpoint import CheckpointError, load_checkpoint, require_entries, require_finite_weights
from .config import ConfigError, TrainConfig, check_config
from .distributed import Context, resolve_device, setup
from .loop import Run, evaluate
from .methods import build_model


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _folds(cfg: TrainConfig, has_test: bool) -> list[int | None]:
    if has_test:
        return [None]
    return [cfg.fold] if cfg.fold is not None else list(range(cfg.folds))


def train(cfg: TrainConfig, ctx: Context | None = None, *, log=print) -> dict:
    """Runs every (seed, fold); returns {"runs": [result, ...], "summary": {...}}.

    Classification: test accuracy mean ± std over seeds. Regression (k-fold CV): per seed the mean test MSE
    over folds (mean ± std over folds, as Table 2), then mean ± std of those over seeds.
    """
    ctx = ctx or setup(cfg.device)
    data = load_dataset(cfg.dataset, cfg.data_dir)
    metric = "test_accuracy" if data.task == "classification" else "test_mse"
    runs = []
    for seed in cfg.seeds:
        for fold in _folds(cfg, data.test is not None):
            prepared = prepare(data, val_fraction=cfg.val_fraction, fold=fold, folds=cfg.folds,
                               split_seed=cfg.split_seed)
            run_dir = None
            if cfg.out_dir is not None:
                run_dir = Path(cfg.out_dir) / f"seed{seed}" / ("" if fold is None else f"fold{fold}")
            result = Run(cfg, prepared, ctx, seed=seed, fold=fold, run_dir=run_dir).fit()
            runs.append({"seed": seed, "fold": fold, **result})
            if ctx.main:
                log(json.dumps(runs[-1]))
    per_seed = [statistics.fmean(r[metric] for r in runs if r["seed"] == s) for s in cfg.seeds]
    summary = {"dataset": cfg.dataset, "method": cfg.method, "metric": metric, "seeds": cfg.seeds,
               "mean": mean_std(per_seed)[0], "std": mean_std(per_seed)[1]}
    if data.task == "regression":
        summary["cv_per_seed"] = [dict(zip(("mean", "std"), mean_std([r[metric] for r in runs if r["seed"] == s])))
                                  for s in cfg.seeds]
    return {"runs": runs, "summary": summary}


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
    try:
        cfg = TrainConfig(**config)
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
