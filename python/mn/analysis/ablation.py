"""Fig. 4: ablations over the dictionary size S and the attention temperature gamma. Trains one MN model per
(S, gamma, seed) of a grid with `mn train`'s system and plots the test metric against S (one line per gamma)
and against gamma (one line per S), mean ± std over seeds. Default: digits, a grid around its defaults
(S = 500, gamma = 5); the paper's is CIFAR-100 with ResNet-29 (S up to 10000, gamma 1..20)."""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

from ..training import make_config, train
from ..training.run import mean_std
from .plotting import new_figure, require_matplotlib, save_json, save_png
from .trained import AnalysisError

DEFAULT_ENTRIES = (10, 50, 200, 500)
DEFAULT_GAMMAS = (1.0, 5.0, 25.0)


def sweep(out_dir, *, dataset: str = "digits", entries=DEFAULT_ENTRIES, gammas=DEFAULT_GAMMAS, seeds=(0, 1),
          epochs: int | None = None, max_steps_per_epoch: int | None = None, data_dir=None, device="auto",
          log=None) -> dict:
    """Writes OUT_DIR/ablation.png and ablation.json ({metric, epochs, cells: [{num_entries, gamma, values (one
    per seed; the mean over folds for cross-validated sets), mean, std}]}); returns the JSON's record. Other
    settings are the data set's defaults (epochs overridable). The JSON is rewritten after every cell, so an
    interrupted sweep keeps the cells it finished. log(text): called after each cell (default: stderr)."""
    require_matplotlib()
    log = log or (lambda text: print(text, file=sys.stderr))
    if not entries or not gammas or not seeds:
        raise AnalysisError("entries, gammas and seeds must each hold at least one value")
    out_dir = Path(out_dir)
    record = {"dataset": dataset, "metric": None, "seeds": list(seeds), "epochs": None, "cells": []}
    for S in entries:
        for gamma in gammas:
            flags = dict(dataset=dataset, method="mn", num_entries=int(S), gamma=float(gamma), seeds=list(seeds),
                         epochs=epochs, max_steps_per_epoch=max_steps_per_epoch, data_dir=data_dir, device=device,
                         progress=False)
            cfg = make_config(flags={k: v for k, v in flags.items() if v is not None})
            result = train(cfg, log=lambda _: None)
            metric = record["metric"] = result["summary"]["metric"]
            record["epochs"] = cfg.epochs
            values = [statistics.fmean(r[metric] for r in result["runs"] if r["seed"] == s) for s in cfg.seeds]
            # over seeds (the summary's std also spans the folds of cross-validated sets)
            mean, std = mean_std(values)
            record["cells"].append({"num_entries": int(S), "gamma": float(gamma), "values": values,
                                    "mean": mean, "std": std})
            save_json(record, out_dir / "ablation.json")
            log(f"  S = {S}, gamma = {gamma:g}: {metric} {mean:.4f} ± {std:.4f} "
                f"({len(record['cells'])}/{len(entries) * len(gammas)})")
    _plot(record, out_dir / "ablation.png")
    return record


def _plot(record: dict, path: Path) -> None:
    cells = record["cells"]
    fig = new_figure(9, 3.6)
    for ax, (x_key, line_key, x_label) in zip(fig.subplots(1, 2), (("num_entries", "gamma", "dictionary size S"),
                                                                 ("gamma", "num_entries", r"temperature $\gamma$"))):
        for line in sorted({c[line_key] for c in cells}):
            row = sorted((c for c in cells if c[line_key] == line), key=lambda c: c[x_key])
            ax.errorbar([c[x_key] for c in row], [c["mean"] for c in row], yerr=[c["std"] for c in row],
                        marker="o", capsize=3, label=f"{'S' if line_key == 'num_entries' else 'γ'} = {line:g}")
        ticks = sorted({c[x_key] for c in cells})
        ax.set(xscale="log", xlabel=x_label, ylabel=record["metric"].replace("_", " "))
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.legend(fontsize=8)
    fig.suptitle(f"{record['dataset']}: mean ± std over seeds {record['seeds']}", fontsize=10)
    save_png(fig, path)
