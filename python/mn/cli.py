"""The `mn` command: `mn demo`, `mn train`, `mn eval`, `mn analyze` (also `python -m mn ...`).

  mn demo                      vanilla vs Meta-Neighborhoods on digits and the spirals toy, a results table
  mn train --dataset digits --method mn --seeds 0 1 2 --out-dir runs/digits-mn
  mn train --config my.toml --epochs 5          (flags override the file; the file overrides data-set defaults)
  torchrun --nproc_per_node 2 -m mn train ...   (DistributedDataParallel; gloo on CPU, NCCL on GPU)
  mn eval runs/digits-mn/seed0/best.pt          (Algorithm 2 on the saved model)
  mn eval runs/mine/seed0/fold0/best.pt --dataset csv:mine.csv   (paths only from the command line)
  mn analyze all --out-dir analysis             (the paper's figures on shipped data; see mn analyze -h)
  mn analyze cosine --checkpoint runs/digits-mn/seed0/best.pt --out-dir analysis
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
    parser = argparse.ArgumentParser(prog="mn", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="vanilla vs Meta-Neighborhoods on shipped data (digits, spirals)")
    demo.add_argument("--fast", action="store_true", help="a few steps only (CI smoke run)")
    demo.add_argument("--seed", type=int, default=0)
    train = sub.add_parser("train", help="train any data set / method; metrics as JSON lines")
    _add_train_flags(train)
    ev = sub.add_parser("eval", help="evaluate a checkpoint (Algorithm 2: adapt per example, then predict)")
    ev.add_argument("checkpoint")
    ev.add_argument("--split", choices=("test", "val"), default="test")
    ev.add_argument("--data-dir", default=None,
                    help="where the data set's files are (default: $MN_DATA or ./data; never the checkpoint's)")
    ev.add_argument("--dataset", default=None,
                    help="csv:<path>: the CSV of a model trained on one (a checkpoint's stored path is not opened)")
    ev.add_argument("--device", default="cpu", help="cpu, cuda, auto (default: cpu)")
    _add_analyze(sub)
    return parser


def _add_analyze(sub) -> None:
    from .analysis import ablation
    analyze = sub.add_parser("analyze", help="the paper's figures (PNG + JSON) for a checkpoint or shipped data",
                             description="Each analysis writes OUT_DIR/<what>.png and OUT_DIR/<what>.json.")
    what = analyze.add_subparsers(dest="what", required=True)

    def add(name, help_text, checkpoint=False):
        p = what.add_parser(name, help=help_text)
        p.add_argument("--out-dir", default="analysis", help="where the files go (default: analysis)")
        p.add_argument("--device", default="auto", help="cpu, cuda, ... (default: cuda if available)")
        if checkpoint:
            p.add_argument("--checkpoint", required=True, help="a checkpoint of `mn train` (e.g. .../best.pt)")
            p.add_argument("--data-dir", default=None)
        return p

    p = add("toy", "Fig. 1: learnable neighbours on the two spirals (trains; PNG, GIF, JSON)")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-entries", type=int, default=64)
    p.add_argument("--gamma", type=float, default=10.0)
    p = add("cosine", "Fig. 3: cos(z, w_y) before vs after the inner step", checkpoint=True)
    p.add_argument("--split", choices=("test", "val"), default="test")
    p = add("ablation", "Fig. 4: test metric over a grid of S and gamma (trains one model per cell and seed)")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--entries", type=int, nargs="+", default=list(ablation.DEFAULT_ENTRIES))
    p.add_argument("--gammas", type=float, nargs="+", default=list(ablation.DEFAULT_GAMMAS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--epochs", type=int, default=None, help="default: the data set's")
    p = add("entries", "Fig. 5: nearest test samples of dictionary entries, with the entries' classes",
            checkpoint=True)
    p.add_argument("--entries", type=int, nargs="+", default=None,
                   help="entry indices (default: the most confident entry of each class, up to 12)")
    p.add_argument("-k", type=int, default=5, help="neighbours per entry (default: 5)")
    p = add("induction", "Fig. 6: fine-label kNN accuracy of MN (attention) vs vanilla (features) trained on "
            "coarse labels", checkpoint=True)
    p.add_argument("--baseline", required=True, help="checkpoint of the vanilla model trained on the same data")
    p.add_argument("-k", type=int, default=10, help="neighbours of the kNN classifier (default: 10)")
    p = add("all", "every figure on shipped data, training the ~30 small models they need (10-25 min on 2 CPU cores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fast", action="store_true", help="tiny training runs: a smoke test, not a result")


def _analyze(args) -> None:
    import torch

    from .analysis import ablation, cosine, entries, induction, shipped, toy
    from .analysis.plotting import require_matplotlib
    require_matplotlib()
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    out = args.out_dir
    if args.what == "toy":
        record = toy.learnable_neighbours(out, epochs=args.epochs, seed=args.seed, num_entries=args.num_entries,
                                          gamma=args.gamma, device=device)
        headline = {"test_accuracy_last_epoch": record["test_accuracy_per_epoch"][-1]}
    elif args.what == "cosine":
        record = cosine.cosine_shift(args.checkpoint, out, split=args.split, data_dir=args.data_dir, device=device)
        headline = {k: record[k] for k in ("share_above", "mean_before", "mean_after")}
    elif args.what == "ablation":
        record = ablation.sweep(out, dataset=args.dataset, entries=args.entries, gammas=args.gammas, seeds=args.seeds,
                                epochs=args.epochs, data_dir=args.data_dir, device=device)
        headline = {"cells": [{k: c[k] for k in ("num_entries", "gamma", "mean", "std")} for c in record["cells"]]}
    elif args.what == "entries":
        record = entries.entry_neighbours(args.checkpoint, out, entries=args.entries, k=args.k,
                                          data_dir=args.data_dir, device=device)
        headline = {"consistency": record["consistency"]}
    elif args.what == "induction":
        headline = induction.induction(args.checkpoint, args.baseline, out, k=args.k, data_dir=args.data_dir,
                                       device=device)["accuracy"]
    else:
        headline = shipped.all_figures(out, seed=args.seed, fast=args.fast, device=device)
    print(json.dumps({"analysis": args.what, "out_dir": out, **headline}))


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
    from .analysis.plotting import MissingPlotting
    from .analysis.trained import AnalysisError
    from .data import DataFormatError
    from .training import CheckpointError, ConfigError
    try:
        if args.command == "demo":
            from .demo import run_demo
            run_demo(fast=args.fast, seed=args.seed)
        elif args.command == "train":
            return _train(args)
        elif args.command == "analyze":
            _analyze(args)
        else:
            from .training import evaluate_checkpoint
            print(json.dumps(evaluate_checkpoint(args.checkpoint, split=args.split, data_dir=args.data_dir,
                                                 device=args.device, dataset=args.dataset)))
    except (ConfigError, CheckpointError, DataFormatError, FileNotFoundError, MissingPlotting,
            AnalysisError) as e:
        print(f"mn {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0
