"""Run folders of `mn train`: where a run goes, what it starts with, and what a resume may change.

  OUT_DIR/config.json                      the resolved configuration (`mn train --config OUT_DIR/config.json`
                                           takes it back), written when the run starts
  OUT_DIR/seed<S>/[fold<F>/]metrics.jsonl  one JSON record per epoch, then the run's result
  OUT_DIR/seed<S>/[fold<F>/]last.pt        everything a resume needs (the commit point; loop.Run)
  OUT_DIR/seed<S>/[fold<F>/]best.pt        the best model by validation, for `mn eval` and `mn analyze`
  OUT_DIR/seed<S>/[fold<F>/]wd<V>/...      the same files per value, with --weight-decay-grid

Without --out-dir a run gets a new folder runs/<dataset>-<method>-<YYYYmmdd-HHMMSS>. A folder that already holds
a run is only reused with --resume (continue it) or --overwrite (delete its run files first).
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from pathlib import Path

from .checkpoint import CheckpointError, load_checkpoint, write_lines
from .config import ConfigError, TrainConfig, check_stored, config_to_dict, from_stored

CONFIG_FILE = "config.json"
RUN_FILES = ("last.pt", "best.pt", "metrics.jsonl")
# Folders a run's files sit in: a (seed, fold), and with weight_decay_grid one folder per value below it.
RUN_FOLDERS = ("seed*/", "seed*/fold*/", "seed*/wd*/", "seed*/fold*/wd*/")

# Settings of the command, not of the configuration: left out of config.json and of --dry-run's object.
INVOCATION = ("out_dir", "resume", "progress")
# Settings a resume refuses to change: the model (its shapes and what it computes) and the data (which examples
# and splits it sees, in what batches). The optimiser's kind is refused too: its state cannot carry over.
MODEL_AND_DATA = ("dataset", "method", "backbone", "classifier", "optimizer", "num_entries", "gamma", "inner_steps",
                  "inner_lr", "inner_lr_init", "entry_dropout", "aux_weight", "similarity", "val_fraction", "folds",
                  "split_seed", "batch_size", "key_init_std", "value_scale", "value_init_std", "augment",
                  "weight_decay_grid")
# Changes a resume applies from the next epoch (and says so); any other setting (seeds, fold, device, data_dir,
# eval_batch_size) only says what to run and where.
APPLIED = ("lr", "weight_decay", "momentum", "lr_milestones", "lr_decay", "grad_clip", "epochs", "patience",
           "max_steps_per_epoch")
# --method maxl (training/maxl.py): psi and the generator's backbone shape its networks; the rest is applied.
MODEL_AND_DATA += ("maxl_psi", "maxl_generator")
APPLIED += ("maxl_gen_lr", "maxl_gen_weight_decay", "maxl_lookahead_lr", "maxl_entropy_weight", "maxl_focal_gamma")


def grid_choice(candidates: list[tuple]) -> tuple:
    """The candidate (weight decay, result record, ...) of a weight-decay grid that `mn train` keeps: the best
    validation metric of its result, the highest val_accuracy or the lowest val_mse; a NaN (a diverged run) is
    the worst; the first of equals. run.fit_one chooses with it, `mn table` and `mn plot` replay the choice."""
    def badness(candidate):
        result = candidate[1]
        if "val_accuracy" in result:
            value = -result["val_accuracy"]
        else:
            value = result.get("val_mse", math.inf)
        return math.inf if value != value else value
    return min(candidates, key=badness)


def config_record(cfg: TrainConfig) -> dict:
    """The resolved configuration as config.json holds it (and `--dry-run` prints it): every setting but the
    command's own (out_dir, resume, progress)."""
    return {k: v for k, v in config_to_dict(cfg).items() if k not in INVOCATION}


def write_config(out_dir: str | Path, cfg: TrainConfig) -> Path:
    path = Path(out_dir) / CONFIG_FILE
    write_lines(path, [json.dumps(config_record(cfg), indent=2)])
    return path


def slug(dataset: str) -> str:
    """A folder-name form of a data set's name: csv:/data/my table.csv -> csv-my_table."""
    if dataset.startswith("csv:"):
        dataset = "csv-" + Path(dataset[4:]).stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset)


def default_out_dir(cfg: TrainConfig, *, root: str | Path = "runs", when: float | None = None) -> Path:
    """runs/<dataset>-<method>-<YYYYmmdd-HHMMSS> (local time), with -2, -3, ... if that folder exists."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(when))
    base = Path(root) / f"{slug(cfg.dataset)}-{cfg.method}-{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def run_files(out_dir: str | Path) -> list[Path]:
    """The files of a run in `out_dir`: config.json and seed*/[fold*/]{last.pt, best.pt, metrics.jsonl}."""
    out_dir = Path(out_dir)
    found = [out_dir / CONFIG_FILE] if (out_dir / CONFIG_FILE).is_file() else []
    for pattern in RUN_FOLDERS:
        for name in RUN_FILES:
            found += sorted(p for p in out_dir.glob(pattern + name) if p.is_file())
    return found


def stored_config(out_dir: str | Path) -> tuple[dict, Path] | None:
    """(configuration, the file it was read from) of the run in `out_dir`: its config.json, else (a run of an
    older mn) the configuration stored in its first last.pt or best.pt; None when the folder holds neither."""
    out_dir = Path(out_dir)
    path = out_dir / CONFIG_FILE
    if path.is_file():
        try:
            values = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path} is not valid JSON ({e}); it is the run's configuration") from e
        if not isinstance(values, dict):
            raise ConfigError(f"{path} must hold a table of settings, got {type(values).__name__}")
        return values, path
    for checkpoint in (p for p in run_files(out_dir) if p.suffix == ".pt"):
        try:
            return load_checkpoint(checkpoint)[0], checkpoint
        except CheckpointError:
            continue
    return None


def differences(stored: dict, cfg: TrainConfig, keys) -> list[tuple[str, object, object]]:
    """(key, value in the run, value now) for each of `keys` whose value differs."""
    now = config_to_dict(cfg)
    return [(k, stored[k], now[k]) for k in keys if k in stored and k in now and stored[k] != now[k]]


def describe(changes) -> str:
    return ", ".join(f"{k} ({old!r} -> {new!r})" for k, old, new in changes)


def check_resume(stored: dict, cfg: TrainConfig, where) -> list[tuple[str, object, object]]:
    """ConfigError listing every model or data setting of `cfg` that differs from the run's (`stored`, read from
    `where`); returns the differing settings a resume applies (APPLIED)."""
    check_stored(stored, where, resume=True)
    stored = from_stored(stored)
    refused = differences(stored, cfg, MODEL_AND_DATA)
    if refused:
        raise ConfigError(f"--resume: these settings differ from the run in {where} and would change its model or "
                          f"data: {describe(refused)}. Drop those flags to continue the run, or start a new run "
                          f"(another --out-dir, or --overwrite)")
    return differences(stored, cfg, APPLIED)


def resume_values(stored: dict) -> dict:
    """The stored configuration as the base of a resumed run's settings (without the command's own settings and
    keys this mn does not know)."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return {k: v for k, v in from_stored(stored).items() if k in names and k not in INVOCATION}


def clear_run(out_dir: str | Path) -> list[Path]:
    """Deletes the run files of `out_dir` (and their *.tmp leftovers), and the seed/fold folders they leave
    empty; other files stay. Returns what was deleted."""
    out_dir = Path(out_dir)
    gone = run_files(out_dir)
    gone += [p for pattern in RUN_FOLDERS for p in out_dir.glob(pattern + "*.tmp")]
    for path in gone:
        path.unlink()
    folders = [f for pattern in RUN_FOLDERS for f in out_dir.glob(pattern)]
    for folder in sorted(folders, key=lambda f: len(f.parts), reverse=True):      # the deepest first
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    return gone
