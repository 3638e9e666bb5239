"""Fig. 4: ablations over the dictionary size S and the attention temperature gamma. Trains one MN model per
(S, gamma, seed) with `mn train`'s system and plots the test metric against S (one line per gamma) and against
gamma (one line per S), mean ± std over seeds, each seed a dot. Cells: the full grid entries x gammas, or with
`cross=(S0, gamma0)` the paper's layout, every S at gamma0 and every gamma at S0. Default: digits, a grid around
its defaults (S = 500, gamma = 5); the paper's is CIFAR-100 with ResNet-29 (S up to 10000 at gamma 5, gamma 1..20
at S = 10000)."""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from ..training import make_config, train
from ..training.config import config_to_dict
from ..training.run import mean_std
from .plotting import new_figure, require_matplotlib, save_json, save_png
from .trained import AnalysisError

DEFAULT_ENTRIES = (10, 50, 200, 500)
DEFAULT_GAMMAS = (1.0, 5.0, 25.0)
# settings that differ between cells or runs, left out of the record's "settings"
_PER_CELL = ("num_entries", "gamma", "seeds", "out_dir", "progress", "device", "data_dir")


def cells_of(entries, gammas, cross=None) -> list[tuple[int, float]]:
    """The (S, gamma) cells in the order they train: the grid (S major), or with cross=(S0, gamma0) every S at
    gamma0, then every other gamma at S0."""
    entries, gammas = [int(S) for S in entries], [float(g) for g in gammas]
    if not entries or not gammas:
        raise AnalysisError("entries and gammas must each hold at least one value")
    if any(S < 1 for S in entries) or any(g <= 0 for g in gammas):
        raise AnalysisError(f"entries must be >= 1 and gammas > 0, got {entries} and {gammas}")
    if cross is None:
        return [(S, g) for S in entries for g in gammas]
    if len(cross) != 2:
        raise AnalysisError(f"cross must be (S0, gamma0), got {cross!r}")
    if float(cross[0]) != int(cross[0]):
        raise AnalysisError(f"cross's S0 must be a whole number of entries, got {cross[0]!r}")
    S0, g0 = int(cross[0]), float(cross[1])
    if S0 not in entries or g0 not in gammas:
        raise AnalysisError(f"cross=({S0}, {g0:g}) must be a cell of the lines it crosses: S0 one of the entries "
                            f"{entries}, gamma0 one of the gammas {gammas}")
    return [(S, g0) for S in entries] + [(S0, g) for g in gammas if g != g0]


def sweep(out_dir, *, dataset: str = "digits", entries=DEFAULT_ENTRIES, gammas=DEFAULT_GAMMAS, seeds=(0, 1),
          cross=None, epochs: int | None = None, max_steps_per_epoch: int | None = None, data_dir=None,
          device="auto", log=None) -> dict:
    """Writes OUT_DIR/ablation.png, ablation.json ({dataset, metric, seeds, epochs, design, cross, settings (the
    resolved training configuration common to the cells), cells: [{num_entries, gamma, values (one per seed; the
    mean over folds for cross-validated sets), mean, std, seconds (wall time of the cell's training)}]}) and
    ablation.md (the cells as a Markdown table); returns the JSON's record. Cells: see `cells_of`. Other
    settings are the data set's defaults (epochs overridable). The JSON is rewritten after every cell, so an
    interrupted sweep keeps the cells it finished. log(text): called after each cell (default: stderr)."""
    require_matplotlib()
    log = log or (lambda text: print(text, file=sys.stderr))
    if not seeds:
        raise AnalysisError("seeds must hold at least one value")
    cells = cells_of(entries, gammas, cross)
    out_dir = Path(out_dir)
    record = {"dataset": dataset, "metric": None, "seeds": list(seeds), "epochs": None,
              "design": "grid" if cross is None else "cross",
              "cross": None if cross is None else [int(cross[0]), float(cross[1])], "settings": None, "cells": []}
    for S, gamma in cells:
        flags = dict(dataset=dataset, method="mn", num_entries=S, gamma=gamma, seeds=list(seeds),
                     epochs=epochs, max_steps_per_epoch=max_steps_per_epoch, data_dir=data_dir, device=device,
                     progress=False)
        cfg = make_config(flags={k: v for k, v in flags.items() if v is not None})
        start = time.perf_counter()
        result = train(cfg, log=lambda _: None)
        seconds = time.perf_counter() - start
        metric = record["metric"] = result["summary"]["metric"]
        record["epochs"] = cfg.epochs
        record["settings"] = {k: v for k, v in config_to_dict(cfg).items() if k not in _PER_CELL}
        values = [statistics.fmean(r[metric] for r in result["runs"] if r["seed"] == s) for s in cfg.seeds]
        # over seeds (the summary's std also spans the folds of cross-validated sets)
        mean, std = mean_std(values)
        record["cells"].append({"num_entries": S, "gamma": gamma, "values": values, "mean": mean, "std": std,
                                "seconds": seconds})
        save_json(record, out_dir / "ablation.json")
        log(f"  S = {S}, gamma = {gamma:g}: {metric} {mean:.4f} ± {std:.4f} "
            f"({len(record['cells'])}/{len(cells)}, {seconds:.0f} s)")
    (out_dir / "ablation.md").write_text(markdown(record))
    _plot(record, out_dir / "ablation.png")
    return record


def markdown(record: dict) -> str:
    """The cells as a Markdown table: S, gamma, mean ± std over the seeds, the per-seed values, wall time."""
    metric = record["metric"].replace("_", " ")
    lines = [f"| S | gamma | {metric}: mean ± std | per seed ({', '.join(map(str, record['seeds']))}) | seconds |",
             "| ---: | ---: | --- | --- | ---: |"]
    for c in record["cells"]:
        lines.append(f"| {c['num_entries']} | {c['gamma']:g} | {c['mean']:.4f} ± {c['std']:.4f} | "
                     f"{', '.join(f'{v:.4f}' for v in c['values'])} | {c['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def _plot(record: dict, path: Path) -> None:
    cells = record["cells"]
    fig = new_figure(9, 3.6)
    for ax, (x_key, line_key, x_label) in zip(fig.subplots(1, 2), (("num_entries", "gamma", "dictionary size S"),
                                                                 ("gamma", "num_entries", r"temperature $\gamma$"))):
        lines = [sorted((c for c in cells if c[line_key] == line), key=lambda c: c[x_key])
                 for line in sorted({c[line_key] for c in cells})]
        if any(len(row) > 1 for row in lines):     # a cross design's lone points belong to the other panel
            lines = [row for row in lines if len(row) > 1]
        for row in lines:
            line = row[0][line_key]
            drawn = ax.errorbar([c[x_key] for c in row], [c["mean"] for c in row], yerr=[c["std"] for c in row],
                                marker="o", capsize=3, label=f"{'S' if line_key == 'num_entries' else 'γ'} = {line:g}")
            ax.scatter([c[x_key] for c in row for _ in c["values"]], [v for c in row for v in c["values"]], s=10,
                       color=drawn.lines[0].get_color(), alpha=0.45, linewidths=0)
        ax.scatter([], [], s=10, color="gray", alpha=0.45, linewidths=0, label="single seeds")
        ticks = sorted({c[x_key] for row in lines for c in row})
        ax.set(xscale="log", xlabel=x_label, ylabel=record["metric"].replace("_", " "))
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.legend(fontsize=8)
    epochs = f", {record['epochs']} epochs" if record.get("epochs") else ""
    fig.suptitle(f"{record['dataset']}: mean ± std over seeds {record['seeds']}{epochs}", fontsize=10)
    save_png(fig, path)
