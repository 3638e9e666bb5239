"""Training configuration: one dataclass, per-data-set defaults (the paper's settings), JSON/TOML files, checks.

Precedence: explicit flags > config file > the data set's defaults > the field defaults below.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..data import DATASETS, UCI_SETS
from ..models import BACKBONES

METHODS = ("vanilla", "mn")
CLASSIFIERS = ("cosine", "dot")
OPTIMIZERS = ("adamw", "sgd")
INNER_LRS = ("scalar", "diagonal")
SIMILARITIES = ("cosine", "euclidean")
ALL_BACKBONES = (*BACKBONES, "mlp", "linear")


@dataclass
class TrainConfig:
    """Everything `mn train` needs. None means "the data set's default" (see DATASET_DEFAULTS)."""

    dataset: str = "digits"
    data_dir: str | None = None
    method: str = "mn"                      # "vanilla" baseline or Meta-Neighborhoods ("mn")
    backbone: str | None = None             # feature extractor; "mlp" / "linear" for tabular sets
    classifier: str = "cosine"              # vanilla output layer; MN always adapts a cosine classifier
    optimizer: str = "adamw"
    lr: float = 1e-3                        # (0.1 when optimizer is "sgd" and lr is not given)
    weight_decay: float = 7.5e-5            # not on the dictionary, classifier, tau, inner rate
    momentum: float = 0.9                   # SGD only
    epochs: int | None = None
    lr_milestones: list[int] | None = None  # epochs at which the learning rate is multiplied by lr_decay
    lr_decay: float = 0.1
    batch_size: int = 128                   # global batch (split over processes under torchrun)
    grad_clip: float | None = 10.0          # elementwise clip (authors' code); None for none
    num_entries: int | None = None          # dictionary size S
    gamma: float | None = None              # attention temperature
    inner_steps: int = 1                    # "ft:1" / "ft:3"
    inner_lr: str = "scalar"                # "scalar" or "diagonal" (per feature / per parameter element)
    inner_lr_init: float = 0.05
    entry_dropout: float = 0.0              # share of entries each example does not see in training
    aux_weight: float = 1.0                 # lambda of Eq. 14 (classification with a backbone)
    similarity: str | None = None           # attention of the generic (tabular) layer
    val_fraction: float = 0.1
    folds: int = 5                          # cross-validation folds for sets without a test split
    fold: int | None = None                 # run one fold only (None: all)
    split_seed: int = 0
    seeds: list[int] = field(default_factory=lambda: [0])
    patience: int | None = None             # early stopping on validation loss; None: off
    max_steps_per_epoch: int | None = None  # cap, for smoke tests
    eval_batch_size: int = 512
    device: str = "auto"
    out_dir: str | None = None              # checkpoints + metrics.jsonl; None: nothing written
    resume: bool = False
    progress: bool = True


def _image(backbone, epochs, milestones, entries):
    return dict(backbone=backbone, epochs=epochs, lr_milestones=milestones, num_entries=entries, gamma=5.0)


_REGRESSION = dict(backbone="mlp", epochs=500, lr_milestones=[], num_entries=1000, gamma=10.0,
                   similarity="euclidean", patience=10)

# The paper's settings (§Experiments); digits and spirals are this package's small shipped tasks.
DATASET_DEFAULTS = {
    "digits": _image("digits_cnn", 30, [20], 500),
    "digits_coarse": _image("digits_cnn", 30, [20], 500),
    "spirals": dict(backbone="linear", epochs=60, lr_milestones=[], num_entries=64, gamma=10.0,
                    similarity="euclidean", weight_decay=0.0, lr=1e-2),
    "diabetes": dict(_REGRESSION, num_entries=100),
    "cifar10": _image("resnet29", 400, [300], 5000),
    "cifar100": _image("resnet29", 400, [300], 10000),
    "cifar100_coarse": _image("resnet29", 400, [300], 10000),
    "cinic10": _image("resnet29", 350, [250], 5000),
    "tiny_imagenet": _image("resnet29", 350, [250], 10000),
    **{name: dict(_REGRESSION) for name in UCI_SETS},
    "csv": dict(_REGRESSION),
}


class ConfigError(ValueError):
    """A configuration value or file is invalid (the message names the key)."""


def dataset_defaults(dataset: str) -> dict:
    return DATASET_DEFAULTS["csv" if dataset.startswith("csv:") else dataset]


def read_config_file(path: str | Path) -> dict:
    """A JSON (.json) or TOML (.toml) file of TrainConfig fields."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        if path.suffix == ".toml":
            try:
                import tomllib
            except ImportError as e:
                raise ConfigError(f"config file {path}: TOML needs Python >= 3.11; use a .json file") from e
            values = tomllib.loads(path.read_text())
        elif path.suffix == ".json":
            values = json.loads(path.read_text())
        else:
            raise ConfigError(f"config file {path} must end in .json or .toml")
    except (ValueError, UnicodeDecodeError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"config file {path} is not valid {path.suffix[1:].upper()}: {e}") from e
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a table of settings, got {type(values).__name__}")
    return values


def make_config(file_values: dict | None = None, flags: dict | None = None) -> TrainConfig:
    """Merge (flags over file over data-set defaults over field defaults), check, and fill in the defaults."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    merged = {}
    for source, values in (("config file", file_values or {}), ("flags", flags or {})):
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"unknown setting(s) in {source}: {', '.join(unknown)}; "
                              f"known: {', '.join(sorted(names))}")
        merged.update({k: v for k, v in values.items() if v is not None})
    dataset = merged.get("dataset", TrainConfig.dataset)
    if not isinstance(dataset, str) or not (dataset in DATASETS or dataset.startswith("csv:")):
        raise ConfigError(f"dataset must be one of {', '.join(DATASETS)} or 'csv:<path>', got {dataset!r}")
    if merged.get("optimizer") == "sgd" and "lr" not in merged:
        merged["lr"] = 0.1            # the usual SGD rate for these nets; AdamW's 1e-3 would barely move
    cfg = TrainConfig(**{**dataset_defaults(dataset), **merged})
    check_config(cfg)
    return cfg


def _require(ok: bool, key: str, expected: str, value) -> None:
    if not ok:
        raise ConfigError(f"{key} must be {expected}, got {value!r}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_config(cfg: TrainConfig) -> None:
    """Each invalid value raises ConfigError naming its key and what was expected."""
    for key, choices in (("method", METHODS), ("classifier", CLASSIFIERS), ("optimizer", OPTIMIZERS),
                         ("inner_lr", INNER_LRS), ("backbone", ALL_BACKBONES), ("similarity", SIMILARITIES)):
        value = getattr(cfg, key)
        _require(value in choices or (value is None and key == "similarity"), key,
                 f"one of {', '.join(map(repr, choices))}", value)
    for key in ("epochs", "batch_size", "num_entries", "inner_steps", "folds", "eval_batch_size"):
        _require(_is_int(getattr(cfg, key)) and getattr(cfg, key) >= 1, key, "a positive integer", getattr(cfg, key))
    for key in ("patience", "max_steps_per_epoch"):
        v = getattr(cfg, key)
        _require(v is None or (_is_int(v) and v >= 1), key, "a positive integer or null", v)
    for key in ("lr", "gamma", "inner_lr_init"):
        _require(_is_num(getattr(cfg, key)) and getattr(cfg, key) > 0, key, "a number > 0", getattr(cfg, key))
    for key in ("weight_decay", "momentum", "aux_weight"):
        _require(_is_num(getattr(cfg, key)) and getattr(cfg, key) >= 0, key, "a number >= 0", getattr(cfg, key))
    _require(_is_num(cfg.lr_decay) and 0 < cfg.lr_decay <= 1, "lr_decay", "a number in (0, 1]", cfg.lr_decay)
    _require(cfg.grad_clip is None or (_is_num(cfg.grad_clip) and cfg.grad_clip > 0), "grad_clip",
             "a number > 0 or null", cfg.grad_clip)
    _require(_is_num(cfg.entry_dropout) and 0 <= cfg.entry_dropout < 1, "entry_dropout", "a number in [0, 1)",
             cfg.entry_dropout)
    _require(_is_num(cfg.val_fraction) and 0 <= cfg.val_fraction < 1, "val_fraction", "a number in [0, 1)",
             cfg.val_fraction)
    _require(isinstance(cfg.lr_milestones, list) and all(_is_int(m) and m >= 1 for m in cfg.lr_milestones),
             "lr_milestones", "a list of positive epoch numbers", cfg.lr_milestones)
    _require(isinstance(cfg.seeds, list) and len(cfg.seeds) > 0 and all(_is_int(s) for s in cfg.seeds), "seeds",
             "a non-empty list of integers", cfg.seeds)
    _require(cfg.fold is None or (_is_int(cfg.fold) and 0 <= cfg.fold < cfg.folds), "fold",
             f"null or an integer in [0, {cfg.folds})", cfg.fold)
    _require(_is_int(cfg.split_seed), "split_seed", "an integer", cfg.split_seed)
    _require(isinstance(cfg.device, str), "device", "a string such as 'auto', 'cpu', 'cuda'", cfg.device)
    _require(not cfg.resume or cfg.out_dir is not None, "resume", "used with out_dir (where the checkpoint is)",
             cfg.resume)


def config_to_dict(cfg: TrainConfig) -> dict:
    return dataclasses.asdict(cfg)
