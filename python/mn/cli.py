"""The `mn` command: `mn demo`, `mn train`, `mn eval`, `mn plot`, `mn analyze` (also `python -m mn ...`).

  mn demo                      vanilla vs Meta-Neighborhoods on digits and the spirals toy, a results table
  mn train --dataset digits --method mn --seeds 0 1 2 --out-dir runs/digits-mn
  mn train --dataset digits                     (no --out-dir: a new folder runs/digits-mn-<YYYYmmdd-HHMMSS>)
  mn train --config runs/digits-mn/config.json --epochs 5   (flags override the file, the file the data set's defaults)
  mn train --dataset digits --dry-run           (print the resolved configuration as JSON; nothing is read or written)
  mn train --out-dir runs/digits-mn --resume    (continue the run there; --overwrite replaces it instead)
  torchrun --nproc_per_node 2 -m mn train ...   (DistributedDataParallel; gloo on CPU, NCCL on GPU)
  mn eval runs/digits-mn/seed0/best.pt          (Algorithm 2 on the saved model)
  mn eval runs/mine/seed0/fold0/best.pt --dataset csv:mine.csv   (paths only from the command line)
  mn plot runs/digits-mn runs/digits-vanilla --out curves.png    (training curves from metrics.jsonl)
  mn table runs/table1/*                        (finished runs as the paper's Table 1, mean ± std per cell; --json)
  mn analyze all --out-dir analysis             (the paper's figures on shipped data; see mn analyze -h)
  mn analyze cosine --checkpoint runs/digits-mn/seed0/best.pt --out-dir analysis
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing

from ._version import __version__
from .data import DATASETS
from .training.config import ALL_BACKBONES, CLASSIFIERS, INNER_LRS, METHODS, OPTIMIZERS, SIMILARITIES, TrainConfig

# Flags that are not plain "--name VALUE" settings.
_SPECIAL = {"resume", "progress", "seeds", "lr_milestones", "weight_decay_grid"}


def _choices(values) -> str:
    return ", ".join(values)


# What each setting of `mn train` does (its default is appended).
TRAIN_HELP = {
    "dataset": f"data set: {_choices(DATASETS)}, or csv:<path> (a numeric CSV, target in the last column)",
    "data_dir": "where the data set's files are (default: $MN_DATA or ./data; nothing is downloaded)",
    "method": f"{_choices(METHODS)}: the output layer alone, Meta-Neighborhoods, or the MAXL baseline (Liu et "
              f"al., NeurIPS 2019: a multi-task network with an auxiliary head trained on labels a second network "
              f"learns; classification only)",
    "backbone": f"feature extractor: {_choices(ALL_BACKBONES)} (mlp, linear: tabular sets; mlp_small, mlp_wide: "
                f"tabular classification, with the image sets' output layers)",
    "classifier": f"output layer of --method vanilla: {_choices(CLASSIFIERS)}",
    "optimizer": _choices(OPTIMIZERS),
    "lr": "learning rate (0.1 with --optimizer sgd when not given)",
    "weight_decay": "weight decay as torch.optim.AdamW / SGD take it (AdamW: w -= lr * wd * w, so the paper's 7.5e-5 "
                    "at lr 1e-3 is 0.075; SGD: 2e-4 on conv / linear weights), on the backbone only: not on the "
                    "dictionary, classifier, tau, inner rate",
    "momentum": "SGD momentum (Nesterov)",
    "epochs": "epochs per run",
    "lr_decay": "factor applied to the learning rate at each --lr-milestones epoch",
    "batch_size": "global batch size (split over processes under torchrun)",
    "grad_clip": "clip each gradient element to [-X, X]; none: no clipping",
    "num_entries": "dictionary size S",
    "gamma": "attention temperature",
    "inner_steps": "inner gradient steps per example (paper: 1 or 3)",
    "inner_lr": f"inner learning rate: {_choices(INNER_LRS)} (one per feature)",
    "inner_lr_init": "initial inner learning rate alpha",
    "entry_dropout": "share of the dictionary each training example does not see, in [0, 1)",
    "key_init_std": "standard deviation of the keys' initial normal draw",
    "value_scale": "classification values are softmax(value_scale * raw) (authors' code: 10)",
    "value_init_std": "raw values start as a normal draw truncated at two std, with this std",
    "augment": "true / false: random crop, flip, AutoAugment (CIFAR policy) and Cutout in training",
    "aux_weight": "weight of the auxiliary un-adapted head's loss (Eq. 14; image classification)",
    "similarity": f"attention of the tabular layer: {_choices(SIMILARITIES)}",
    "val_fraction": "share of the training data held out for validation (best model, early stopping)",
    "folds": "cross-validation folds of data sets without a test split",
    "fold": "run this cross-validation fold only (default: all)",
    "split_seed": "seed of the train / validation / test split (the same for every --seeds)",
    "patience": "stop after this many epochs without a lower validation loss; none: never",
    "max_steps_per_epoch": "cap on the steps of an epoch (smoke tests)",
    "eval_batch_size": "batch size of validation and test",
    "device": "auto, cpu, cuda, cuda:1, ... (auto: the GPU if there is one)",
    "out_dir": "run folder (default: a new runs/<dataset>-<method>-<YYYYmmdd-HHMMSS>)",
    "maxl_psi": "--method maxl: auxiliary classes per primary class (the hierarchy psi)",
    "maxl_generator": f"--method maxl: backbone of the label-generation network ({_choices(ALL_BACKBONES)}; "
                      f"default: the same as --backbone, with its own weights)",
    "maxl_gen_lr": "--method maxl: learning rate of the label-generation network (same optimiser kind and schedule)",
    "maxl_gen_weight_decay": "--method maxl: weight decay of the label-generation network (torch's form)",
    "maxl_lookahead_lr": "--method maxl: step size alpha of the look-ahead SGD step theta1+ the generator learns "
                         "through (times --lr-decay at each milestone)",
    "maxl_entropy_weight": "--method maxl: weight of the entropy regulariser that keeps generated labels from "
                           "collapsing",
    "maxl_focal_gamma": "--method maxl: focal loss exponent of the primary and auxiliary losses (0: cross-entropy)",
}
_METAVARS = {"dataset": "NAME", "method": "{" + ",".join(METHODS) + "}", "backbone": "NAME",
             "classifier": "{" + ",".join(CLASSIFIERS) + "}", "optimizer": "{" + ",".join(OPTIMIZERS) + "}",
             "inner_lr": "{" + ",".join(INNER_LRS) + "}", "similarity": "{" + ",".join(SIMILARITIES) + "}",
             "maxl_generator": "NAME"}


def _boolean(text: str) -> bool:
    """argparse type for true / false (also yes / no, on / off, 1 / 0)."""
    value = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False,
             "0": False}.get(text.lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return value


def _optional(kind):
    """argparse type for an optional number: 'none' gives None (e.g. --patience none)."""
    def parse(text: str):
        return None if text.lower() in ("none", "null") else kind(text)
    parse.__name__ = kind.__name__
    return parse


def _add_train_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="JSON or TOML file of settings (the names below, with underscores), "
                                         "e.g. a run's config.json")
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if f.name in _SPECIAL:
            continue
        hint = str(hints[f.name])
        kind = int if "int" in hint else float if "float" in hint else _boolean if "bool" in hint else str
        parse = _optional(kind) if "None" in hint and kind is not str else kind
        default = f.default if f.default is not dataclasses.MISSING else None
        default_text = "the data set's" if default is None else repr(default)
        if f.name in ("out_dir", "data_dir"):        # their help says what happens without them
            default_text = None
        help_text = TRAIN_HELP[f.name] + ("" if default_text is None else f" (default: {default_text})")
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=parse, default=None,
                            metavar=_METAVARS.get(f.name), help=help_text)
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="one run per seed (default: 0)")
    parser.add_argument("--lr-milestones", dest="lr_milestones", type=int, nargs="*", default=None,
                        help="epochs at which the learning rate is multiplied by --lr-decay (default: the data set's)")
    parser.add_argument("--weight-decay-grid", dest="weight_decay_grid", type=float, nargs="+", default=None,
                        metavar="WD", help="train each (seed, fold) once per value and keep the one with the best "
                                           "validation result (the paper's per-data-set choice; default: none)")
    parser.add_argument("--resume", action="store_true", default=None,
                        help="continue the run in --out-dir (its config.json; each seed*/[fold*/]last.pt where present)"
                             "; flags that change the model or data are refused, a new --lr / --epochs / ... applies "
                             "from the next epoch")
    parser.add_argument("--overwrite", action="store_true",
                        help="reuse an --out-dir that holds a run: its run files are deleted first")
    parser.add_argument("--dry-run", dest="dry_run", action="store_true",
                        help="print the resolved configuration (what config.json would hold) as one JSON object "
                             "and exit; no data is read, nothing is written")
    parser.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                        help="no progress bars (they show only when stdout and stderr are terminals)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mn", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"mn {__version__}",
                        help="print the version of mn and exit")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="vanilla vs Meta-Neighborhoods on shipped data (digits, spirals)")
    demo.add_argument("--fast", action="store_true", help="a few steps only (CI smoke run)")
    demo.add_argument("--seed", type=int, default=0, help="seed of every model (default: 0)")
    train = sub.add_parser("train", help="train any data set / method into a run folder; results as JSON lines",
                           description="Trains every seed (and fold) into a run folder: config.json, then "
                                       "seed*/[fold*/]metrics.jsonl, last.pt, best.pt. stdout: one JSON line per run "
                                       "and a summary; stderr: the run folder, one line per epoch, the summary.")
    _add_train_flags(train)
    ev = sub.add_parser("eval", help="evaluate a checkpoint (Algorithm 2: adapt per example, then predict)")
    ev.add_argument("checkpoint", help="a checkpoint of mn train (RUN_DIR/seed*/[fold*/]best.pt or last.pt)")
    ev.add_argument("--split", choices=("test", "val"), default="test",
                    help="the split of the checkpoint's data to evaluate on (default: test)")
    ev.add_argument("--data-dir", default=None,
                    help="where the data set's files are (default: $MN_DATA or ./data; never the checkpoint's)")
    ev.add_argument("--dataset", default=None,
                    help="csv:<path>: the CSV of a model trained on one (a checkpoint's stored path is not opened)")
    ev.add_argument("--device", default="cpu", help="cpu, cuda, auto (default: cpu)")
    plot = sub.add_parser("plot", help="training curves (loss, validation metric per epoch) of runs, as a PNG",
                          description="Draws train / validation loss and the validation metric per epoch from the "
                                      "metrics.jsonl of one or more run folders of mn train (a folder with several "
                                      "seeds or folds: their mean, with a min-max band).")
    plot.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                      help="a run folder of mn train (or one of its seed*/ or fold*/ folders)")
    plot.add_argument("--out", default="curves.png", help="the PNG to write (default: curves.png)")
    table = sub.add_parser("table", help="finished runs gathered into the paper's Table 1 (Markdown or JSON)",
                           description="Rows: methods (vanilla dot/cos x sgd/adamw, MAXL, ours ft:1/ft:3 x S/D); "
                                       "columns: dataset / backbone; each cell the mean ± sample std of the test "
                                       "accuracy over the finished seeds found, with n (regression runs: a table "
                                       "of test MSE over folds and seeds). Unfinished runs are listed below it.")
    table.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="a run folder of mn train")
    table.add_argument("--json", action="store_true", help="print one JSON object instead of Markdown")
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
            p.add_argument("--data-dir", default=None,
                           help="where the data set's files are (default: $MN_DATA or ./data)")
        return p

    p = add("toy", "Fig. 1: learnable neighbours on the two spirals (trains; PNG, GIF, JSON)")
    p.add_argument("--epochs", type=int, default=60, help="training epochs (default: 60)")
    p.add_argument("--seed", type=int, default=0, help="seed of the model (default: 0)")
    p.add_argument("--num-entries", type=int, default=64, help="dictionary size S (default: 64)")
    p.add_argument("--gamma", type=float, default=10.0, help="attention temperature (default: 10)")
    p = add("cosine", "Fig. 3: cos(z, w_y) before vs after the inner step", checkpoint=True)
    p.add_argument("--split", choices=("test", "val"), default="test", help="the split to plot (default: test)")
    p = add("ablation", "Fig. 4: test metric over a grid of S and gamma (trains one model per cell and seed)")
    p.add_argument("--dataset", default="digits", help="data set, as mn train --dataset (default: digits)")
    p.add_argument("--data-dir", default=None, help="where the data set's files are (default: $MN_DATA or ./data)")
    p.add_argument("--entries", type=int, nargs="+", default=list(ablation.DEFAULT_ENTRIES),
                   help=f"dictionary sizes S of the grid (default: {' '.join(map(str, ablation.DEFAULT_ENTRIES))})")
    p.add_argument("--gammas", type=float, nargs="+", default=list(ablation.DEFAULT_GAMMAS),
                   help=f"temperatures of the grid (default: {' '.join(f'{g:g}' for g in ablation.DEFAULT_GAMMAS)})")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="seeds per cell (default: 0 1)")
    p.add_argument("--cross", nargs=2, type=float, default=None, metavar=("S0", "GAMMA0"),
                   help="the paper's layout instead of the full grid: every S at GAMMA0 and every gamma at S0")
    p.add_argument("--epochs", type=int, default=None, help="default: the data set's")
    p = add("entries", "Fig. 5: nearest test samples of dictionary entries, with the entries' classes",
            checkpoint=True)
    p.add_argument("--entries", type=int, nargs="+", default=None,
                   help="entry indices (default: the most confident entry of each class, up to 12)")
    p.add_argument("-k", type=int, default=5, help="neighbours per entry (default: 5)")
    p = add("induction", "Fig. 6: fine-label kNN accuracy of MN (attention) vs vanilla (features) trained on "
            "coarse labels")
    p.add_argument("--checkpoint", required=True, nargs="+",
                   help="checkpoint(s) of MN models trained on a coarse-labelled set (several: e.g. one per seed)")
    p.add_argument("--baseline", required=True, nargs="+",
                   help="checkpoint(s) of vanilla models trained on the same data, paired with --checkpoint by "
                        "position (mean ± std and the paired difference MN - vanilla with its 95%% t-interval)")
    p.add_argument("--data-dir", default=None, help="where the data set's files are (default: $MN_DATA or ./data)")
    p.add_argument("-k", type=int, default=10, help="neighbours of the kNN classifier (default: 10)")
    p = add("all", "every figure on shipped data, training the ~30 small models they need (10-25 min on 2 CPU cores)")
    p.add_argument("--seed", type=int, default=0, help="seed of every model (default: 0)")
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
                                cross=args.cross, epochs=args.epochs, data_dir=args.data_dir, device=device)
        headline = {"cells": [{k: c[k] for k in ("num_entries", "gamma", "mean", "std")} for c in record["cells"]]}
    elif args.what == "entries":
        record = entries.entry_neighbours(args.checkpoint, out, entries=args.entries, k=args.k,
                                          data_dir=args.data_dir, device=device)
        headline = {"consistency": record["consistency"]}
    elif args.what == "induction":
        record = induction.induction(args.checkpoint, args.baseline, out, k=args.k, data_dir=args.data_dir,
                                     device=device)
        headline = {"accuracy": record["accuracy"],
                    "difference": {level: {key: d[key] for key in ("mean", "std", "ci95")}
                                   for level, d in record["difference"].items()}}
    else:
        headline = shipped.all_figures(out, seed=args.seed, fast=args.fast, device=device)
    print(json.dumps({"analysis": args.what, "out_dir": out, **headline}))


def _say(text: str) -> None:
    print(f"mn train: {text}", file=sys.stderr)


def _shared(ctx, value):
    """`value` of the main process, in every process (under torchrun: a broadcast)."""
    if ctx.world == 1:
        return value
    import torch.distributed as dist
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _train(args) -> int:
    from .training import ConfigError, make_config, read_config_file, rundir, train
    from .training.console import Console
    from .training.distributed import setup, teardown
    from .training.run import summary_line

    flags = {k: v for k, v in vars(args).items()
             if k not in ("command", "config", "overwrite", "dry_run") and v is not None}
    out_dir = flags.get("out_dir")
    if args.resume and args.overwrite:
        raise ConfigError("--resume continues the run in --out-dir and --overwrite deletes it: pass one of them")
    file_values = read_config_file(args.config) if args.config else {}
    stored = None
    if args.resume:
        if out_dir is None:
            raise ConfigError("--resume needs --out-dir: the run folder to continue")
        stored = rundir.stored_config(out_dir)
        if stored is None:
            raise ConfigError(f"--resume: {out_dir} holds no run to resume (no config.json, no "
                              f"seed*/[fold*/]last.pt); drop --resume to start a new run there")
        file_values = {**rundir.resume_values(stored[0]), **file_values}    # the run's settings, then the file's
    elif args.overwrite and out_dir is None:
        raise ConfigError("--overwrite needs --out-dir: the run folder to replace")
    cfg = make_config(file_values, flags)
    applied = rundir.check_resume(stored[0], cfg, stored[1]) if stored else []
    if stored is None and out_dir is not None and not args.overwrite:
        held = rundir.run_files(out_dir)
        if held:
            shown = ", ".join(str(p.relative_to(out_dir)) for p in held[:3]) + (", ..." if len(held) > 3 else "")
            raise ConfigError(f"{out_dir} already holds a run ({shown}): pass --resume to continue it, --overwrite "
                              f"to replace it, or another --out-dir")
    if args.dry_run:
        print(json.dumps(rundir.config_record(cfg)))
        _say(f"dry run: would write to {out_dir or 'a new folder runs/<dataset>-<method>-<YYYYmmdd-HHMMSS>'}; "
             f"no data read, nothing written")
        return 0
    ctx = setup(cfg.device)
    try:
        if cfg.out_dir is None:
            cfg.out_dir = str(_shared(ctx, str(rundir.default_out_dir(cfg)) if ctx.main else None))
        if ctx.world > 1:
            import torch.distributed as dist
            dist.barrier()             # every process has checked the folder before the main one writes to it
        if ctx.main and args.overwrite:
            gone = rundir.clear_run(cfg.out_dir)
            if gone:
                _say(f"--overwrite: deleted the {len(gone)} run files in {cfg.out_dir}")

        def started():
            if stored:
                _say(f"resuming the run in {cfg.out_dir}")
                if applied:
                    _say(f"changed settings, applied from the next epoch: {rundir.describe(applied)}")
            else:
                _say(f"run folder {cfg.out_dir} (config.json; seed*/[fold*/]metrics.jsonl, last.pt, best.pt)")

        console = Console((lambda text: print(text, file=sys.stderr)) if ctx.main else None)
        result = train(cfg, ctx, console=console, log=lambda line: print(line, flush=True), on_start=started)
    finally:
        teardown()
    if ctx.main:
        print(json.dumps({"event": "summary", **result["summary"]}))
        print(summary_line(result["summary"]), file=sys.stderr)
        _say(f"files in {cfg.out_dir}; curves: mn plot {cfg.out_dir}")
    return 0


def _table(args) -> None:
    from .training.table import gather, markdown
    gathered = gather(args.run_dirs)
    if args.json:
        print(json.dumps(gathered))
    else:
        print(markdown(gathered), end="")


def _plot(args) -> None:
    from .analysis.plotting import require_matplotlib
    from .plot import plot_curves
    require_matplotlib()
    record = plot_curves(args.run_dirs, args.out)
    print(json.dumps({"plot": record["out"], "runs": record["runs"]}))


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .analysis.plotting import MissingPlotting
    from .analysis.trained import AnalysisError
    from .data import DataFormatError
    from .plot import PlotError
    from .training import CheckpointError, ConfigError
    from .training.table import TableError
    try:
        if args.command == "demo":
            from .demo import run_demo
            run_demo(fast=args.fast, seed=args.seed)
        elif args.command == "train":
            return _train(args)
        elif args.command == "analyze":
            _analyze(args)
        elif args.command == "plot":
            _plot(args)
        elif args.command == "table":
            _table(args)
        else:
            from .training import evaluate_checkpoint
            print(json.dumps(evaluate_checkpoint(args.checkpoint, split=args.split, data_dir=args.data_dir,
                                                 device=args.device, dataset=args.dataset)))
    except (ConfigError, CheckpointError, DataFormatError, FileNotFoundError, MissingPlotting,
            AnalysisError, PlotError, TableError) as e:
        print(f"mn {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0
