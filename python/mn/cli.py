"""The `mn` command: `mn demo`, `mn train`, `mn eval` (also `python -m mn ...`).

  mn demo                      vanilla vs Meta-Neighborhoods on digits and the spirals toy, a results table
  mn train --dataset digits --method mn --seeds 0 1 2 --out-dir runs/digits-mn
  mn train --config my.toml --epochs 5          (flags override the file; the file overrides data-set defaults)
  torchrun --nproc_per_node 2 -m mn train ...   (DistributedDataParallel; gloo on CPU, NCCL on GPU)
  mn eval runs/digits-mn/seed0/best.pt          (Algorithm 2 on the saved model)
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing

from .training.config import TrainConfig

# Flags that are not plain "--name VALUE" settings.
_SPECIAL = {"resume", "progress", "seeds", "lr_milestones"}


def _optional(kind):
    """argparse type for an optional number: 'none' gives None (e.g. --patience none)."""
    def parse(text: str):
        return None if text.lower() in ("none", "null") else kind(text)
    parse.__name__ = kind.__name__
    return parse


def _add_train_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="JSON or TOML file of settings (the names below, with underscores)")
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if f.name in _SPECIAL:
            continue
        hint = str(hints[f.name])
        kind = int if "int" in hint else float if "float" in hint else str
        parse = _optional(kind) if "None" in hint and kind is not str else kind
        default = f.default if f.default is not dataclasses.MISSING else None
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=parse, default=None,
                            help="default: the data set's" if default is None else f"default: {default!r}")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="one run per seed (default: 0)")
    parser.add_argument("--lr-milestones", dest="lr_milestones", type=int, nargs="*", default=None,
                        help="epochs at which the learning rate is multiplied by --lr-decay")
    parser.add_argument("--resume", action="store_true", default=None,
                        help="continue from OUT_DIR/seed*/[fold*/]last.pt where present")
    parser.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                        help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mn", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="vanilla vs Meta-Neighborhoods on shipped data (digits, spirals)")
    demo.add_argument("--fast", action="store_true", help="a few steps only (CI smoke run)")
    demo.add_argument("--seed", type=int, default=0)
    train = sub.add_parser("train", help="train any data set / method; metrics as JSON lines")
    _add_train_flags(train)
    ev = sub.add_parser("eval", help="evaluate a checkpoint (Algorithm 2: adapt per example, then predict)")
    ev.add_argument("checkpoint")
    ev.add_argument("--split", choices=("test", "val"), default="test")
    ev.add_argument("--data-dir", default=None)
    ev.add_argument("--device", default="cpu")
    return parser


def _train(args) -> int:
    from .training import make_config, read_config_file, train
    from .training.distributed import setup, teardown

    flags = {k: v for k, v in vars(args).items() if k not in ("command", "config") and v is not None}
    cfg = make_config(read_config_file(args.config) if args.config else None, flags)
    ctx = setup(cfg.device)
    try:
        result = train(cfg, ctx)
    finally:
        teardown()
    if ctx.main:
        s = result["summary"]
        print(json.dumps({"event": "summary", **s}))
        print(f"{s['dataset']} {s['method']}: {s['metric']} {s['mean']:.4f} ± {s['std']:.4f} "
              f"over seeds {s['seeds']}", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .data import DataFormatError
    from .training import CheckpointError, ConfigError
    try:
        if args.command == "demo":
            from .demo import run_demo
            run_demo(fast=args.fast, seed=args.seed)
        elif args.command == "train":
            return _train(args)
        else:
            from .training import evaluate_checkpoint
            print(json.dumps(evaluate_checkpoint(args.checkpoint, split=args.split, data_dir=args.data_dir,
                                                 device=args.device)))
    except (ConfigError, CheckpointError, DataFormatError, FileNotFoundError) as e:
        print(f"mn {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0
