"""What one Table 1 run costs: the time of a whole training step (augmentation of the batch, backbone, head,
loss, backward, clipping, optimiser) for the cells of configs/table1/, times the run's steps.

Each cell is its config file run through `mn train`'s own `Run.train_epoch` on synthetic uint8 images of the data
set's shape and classes (the paper's data are not needed; the step does not look at pixel values), capped at
--steps steps after one warm-up epoch of as many steps (compilation, autotuning). Steps per run = epochs x
ceil(N_train / batch), N_train as the README's "Training" section counts it (45,000 CIFAR images after the
validation share, 90,000 CINIC-10 / Tiny-ImageNet). Hours per run = that x the step's median time on this device,
without the validation pass after each epoch. "inputs ms": the share of the step spent preparing the batch
(normalisation and augmentation, on the host), timed alone.

    python bench/train_step.py --out train-step.md                         # GPU: cells in priority order
    python bench/train_step.py --cells cifar10-resnet29-mn-ft1-S --batch 8 --steps 1 --out /tmp/t.md   # CPU

Rows are appended to --out as each cell finishes; a cell that fails (out of memory, ...) gets a `failed` row and
the next cell runs. MN_BENCH_BUDGET_S (seconds) or --budget-s stops starting cells past it.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from report import Budget, add_budget_arg, open_report, short_error

ROOT = Path(__file__).resolve().parent.parent
CELLS = ROOT / "configs" / "table1"
# (channels, height, width), classes, training images per epoch (README, "Training": the runs' cost)
SHAPES = {"cifar10": ((3, 32, 32), 10, 45_000), "cifar100": ((3, 32, 32), 100, 45_000),
          "cinic10": ((3, 32, 32), 10, 90_000), "tiny_imagenet": ((3, 64, 64), 200, 90_000)}
# Most informative first: the CIFAR-100 ResNet-29 column (every method), then the other backbones and sets.
PRIORITY = ["cifar100-resnet29-mn-ft1-D", "cifar100-resnet29-vanilla-cos-adamw", "cifar100-resnet29-mn-ft3-D",
            "cifar100-resnet29-maxl", "cifar100-resnet56-mn-ft1-D", "cifar100-densenet40bc-mn-ft1-D",
            "tiny_imagenet-resnet29-mn-ft1-D", "cifar10-resnet29-mn-ft1-D", "cinic10-resnet29-mn-ft1-D"]


def synthetic(dataset: str, n: int):
    """A TaskData of n random uint8 images with the data set's shape, classes and augmentation default."""
    from mn.data.base import Split, TaskData

    shape, classes, _ = SHAPES[dataset]
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return TaskData(dataset, "classification", "image", Split(x, y), Split(x[:1], y[:1]), num_outputs=classes,
                    val=Split(x[:1], y[:1]), augment=True)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(cell: str, *, steps: int, batch: int | None, device: torch.device) -> dict:
    """Median step ms over `steps` timed steps (after a warm-up epoch), inputs ms, steps and hours per run."""
    from mn.data import prepare
    from mn.training import make_config
    from mn.training.distributed import Context
    from mn.training.loop import Run

    values = json.loads((CELLS / f"{cell}.json").read_text())
    flags = dict(max_steps_per_epoch=steps, progress=False, device=str(device), seeds=[0])
    if batch is not None:
        flags["batch_size"] = batch
    cfg = make_config(values, flags)
    data = prepare(synthetic(cfg.dataset, cfg.batch_size * steps), val_fraction=0.0, augment=cfg.augment)
    run = Run(cfg, data, Context(rank=0, world=1, device=device), seed=0)
    run.train_epoch()                                   # warm-up: compilation, autotuning, allocator
    times = []
    for _ in range(3):
        synchronize(device)
        start = time.perf_counter()
        run.train_epoch()
        synchronize(device)
        times.append((time.perf_counter() - start) / steps)
    step_s = statistics.median(times)
    g = torch.Generator().manual_seed(1)
    start = time.perf_counter()
    for _ in range(steps):
        data.inputs(data.train.x[:cfg.batch_size], generator=g)
    inputs_s = (time.perf_counter() - start) / steps
    run_steps = cfg.epochs * math.ceil(SHAPES[cfg.dataset][2] / cfg.batch_size)
    return {"cell": cell, "batch": cfg.batch_size, "step_ms": 1e3 * step_s, "inputs_ms": 1e3 * inputs_s,
            "run_steps": run_steps, "hours": run_steps * step_s / 3600}


def release(device: torch.device) -> None:
    """Frees what a failed cell left behind (its Run, model and batches), so that the next cell has the memory."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", nargs="+", default=None,
                        help="configs/table1 cell names (default: the priority list, then every other cell)")
    parser.add_argument("--steps", type=int, default=3, help="steps per timed epoch (default 3)")
    parser.add_argument("--batch", type=int, default=None, help="override the batch (smoke runs; not a cost)")
    parser.add_argument("--out", required=True, help="Markdown file the table is appended to")
    add_budget_arg(parser)
    args = parser.parse_args(argv)
    every = sorted(p.stem for p in CELLS.glob("*.json"))
    cells = args.cells or PRIORITY + [c for c in every if c not in PRIORITY]
    unknown = [c for c in cells if c not in every]
    if unknown:
        parser.error(f"--cells: no configs/table1/{unknown[0]}.json (cells: {', '.join(every)})")
    if args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    budget = Budget(args.budget_s)
    # appended to the file (gpu_check.sh's gpu-bench.md), not echoed: the console gets one line a cell
    emit = open_report("\n## Training steps with a backbone: the cost of a Table 1 run", __file__, argv, args.out,
                       mode="a", echo=False, cpu=f"CPU ({os.cpu_count()} cores)")
    try:
        emit(f"- median of 3 epochs of {args.steps} steps after a warm-up epoch; synthetic images of each set's shape"
             + (f". Batch overridden to {args.batch}: not a run's cost." if args.batch is not None else ""))
        emit("")
        emit("| cell | batch | step ms | inputs ms (host) | steps per run | hours per run on this device |")
        emit("| --- | --- | --- | --- | --- | --- |")
        for cell in cells:
            if budget.spent():
                emit("")
                emit(f"stopped before {cell}: the step's time budget is spent")
                break
            try:
                r = measure(cell, steps=args.steps, batch=args.batch, device=device)
            except Exception as exc:                     # noqa: BLE001 (one failed cell, e.g. out of memory)
                r = {"error": short_error(exc)}
            if "error" in r:                             # the traceback is gone: the cell's tensors can go too
                release(device)
                emit(f"| {cell} | failed: {r['error']} | | | | |")
                print(f"{cell}: failed: {r['error']}", file=sys.stderr, flush=True)
                continue
            emit(f"| {cell} | {r['batch']} | {r['step_ms']:.1f} | {r['inputs_ms']:.1f} | {r['run_steps']:,} | "
                 f"{r['hours']:.2f} |")
            print(f"{cell}: {r['step_ms']:.1f} ms per step, {r['hours']:.2f} h per run", flush=True)
    finally:
        emit.close()


if __name__ == "__main__":
    main()
