"""Writes the `mn train --config` file of every cell of the paper's Table 1 into this folder.

    python configs/table1/make.py            # (re)writes configs/table1/*.json; removes *.json that are no cell
    python configs/table1/make.py --out DIR  # the same files into DIR (tests/test_table1_configs.py compares)

A cell is <dataset>-<backbone>-<row>.json. Each file holds only what defines its cell (data set, backbone,
method, output layer, optimiser, inner steps and rate, and SGD's learning rate); everything else (epochs,
schedule, dictionary size, gamma, weight decay, batch size, ...) comes from the data set's defaults in
python/mn/training/config.py, so a fix there reaches every cell. Edit this script, never the JSON files.
Standard library only: it runs without mn installed.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

DATASETS = ("cifar10", "cifar100", "cinic10", "tiny_imagenet")
BACKBONES = ("densenet40bc", "resnet29", "resnet56")

# SGD's rate. Neither the paper nor the authors' code names one: their main.py feeds --meta_lr (default 1e-3,
# shared with AdamW) to Nesterov SGD and divides it by 10 three times, a schedule made for a start at 0.1
# (from 1e-3 it would end at 1e-6). 0.1 is also mn's default for --optimizer sgd; it is written here to be explicit.
SGD_LR = 0.1

# The rows of Table 1 (file-name part -> the settings that define the row), in the paper's column order. MAXL
# has no output-layer or optimiser choice of its own: it trains with the data set's (python/mn/training/maxl.py).
ROWS = {
    "vanilla-dot-sgd": dict(method="vanilla", classifier="dot", optimizer="sgd", lr=SGD_LR),
    "vanilla-dot-adamw": dict(method="vanilla", classifier="dot", optimizer="adamw"),
    "vanilla-cos-sgd": dict(method="vanilla", classifier="cosine", optimizer="sgd", lr=SGD_LR),
    "vanilla-cos-adamw": dict(method="vanilla", classifier="cosine", optimizer="adamw"),
    "maxl": dict(method="maxl"),
    **{f"mn-ft{steps}-{rate[0].upper()}": dict(method="mn", classifier="cosine", optimizer="adamw",
                                               inner_steps=steps, inner_lr=rate)
       for steps in (1, 3) for rate in ("scalar", "diagonal")},
}


def cells() -> dict[str, dict]:
    """file name -> settings, every (dataset, backbone, row) of Table 1."""
    return {f"{dataset}-{backbone}-{row}.json": dict(dataset=dataset, backbone=backbone, **settings)
            for dataset in DATASETS for backbone in BACKBONES for row, settings in ROWS.items()}


def text(settings: dict) -> str:
    return json.dumps(settings, indent=2) + "\n"


def write(out: Path) -> tuple[int, list[str]]:
    """Writes every cell into `out`; removes the *.json files there that are no cell. Returns (written, removed)."""
    out.mkdir(parents=True, exist_ok=True)
    wanted = cells()
    removed = sorted(p.name for p in out.glob("*.json") if p.name not in wanted)
    for name in removed:
        (out / name).unlink()
    for name, settings in wanted.items():
        (out / name).write_text(text(settings), encoding="utf-8", newline="\n")
    return len(wanted), removed


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent,
                        help="folder to write to (default: this script's folder)")
    args = parser.parse_args(argv)
    written, removed = write(args.out)
    print(f"wrote {written} cells to {args.out}" + (f"; removed {', '.join(removed)}" if removed else ""))


if __name__ == "__main__":
    main()
