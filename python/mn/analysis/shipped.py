"""`mn analyze all`: every figure on shipped data, training the models the figures need on the way.

  toy                       the two-spirals toy (trains itself)
  cosine, entries           an MN model trained on digits
  ablation                  the S x gamma grid on digits
  induction                 MN and vanilla models trained on digits_coarse (digits in 5 groups of two)
Trained models go to OUT_DIR/models/<dataset>-<method>/seed<seed>/ (best.pt, last.pt, metrics.jsonl).
`fast`: one short epoch per model and a 2 x 2 grid: a smoke run that checks the plumbing, not a result.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ..training import make_config, train
from . import ablation, cosine, entries, induction, toy
from .plotting import fresh_dir, require_matplotlib, save_json


def train_shipped(out_dir: Path, dataset: str, method: str, *, seed: int, fast: bool, device: str) -> Path:
    """Trains `method` on a shipped data set with its default settings into OUT_DIR/models/<dataset>-<method>
    (replacing an earlier run there); returns the best model's checkpoint."""
    run_dir = fresh_dir(out_dir / "models" / f"{dataset}-{method}")
    flags = dict(dataset=dataset, method=method, seeds=[seed], out_dir=str(run_dir), device=device, progress=False)
    if fast:
        flags.update(epochs=1, lr_milestones=[], max_steps_per_epoch=2)
    train(make_config(flags=flags), log=lambda _: None)
    return run_dir / f"seed{seed}" / "best.pt"


def all_figures(out_dir, *, seed: int = 0, fast: bool = False, device: str = "cpu", log=None) -> dict:
    """Every analysis into OUT_DIR; returns {analysis: its record's headline numbers} (also OUT_DIR/summary.json)."""
    require_matplotlib()
    log = log or (lambda text: print(text, file=sys.stderr))
    out_dir = Path(out_dir)
    summary = {}
    log("toy: training on the two spirals")
    record = toy.learnable_neighbours(out_dir, epochs=3 if fast else 60, seed=seed, device=device)
    summary["toy"] = {"test_accuracy_first_last": [record["test_accuracy_per_epoch"][i] for i in (0, -1)]}
    log("cosine, entries: training MN on digits")
    digits = train_shipped(out_dir, "digits", "mn", seed=seed, fast=fast, device=device)
    record = cosine.cosine_shift(digits, out_dir, device=device)
    summary["cosine"] = {k: record[k] for k in ("share_above", "mean_before", "mean_after")}
    record = entries.entry_neighbours(digits, out_dir, device=device)
    summary["entries"] = {"consistency": record["consistency"]}
    log("ablation: the S x gamma grid on digits")
    grid = dict(entries=(10, 50), gammas=(1.0, 5.0), seeds=(seed,), epochs=1, max_steps_per_epoch=2) if fast else {}
    record = ablation.sweep(out_dir, dataset="digits", device=device, log=log, **grid)
    summary["ablation"] = {"best": max(record["cells"], key=lambda c: c["mean"])}
    log("induction: training MN and vanilla on digits_coarse")
    mn_model, vanilla = (train_shipped(out_dir, "digits_coarse", m, seed=seed, fast=fast, device=device)
                         for m in ("mn", "vanilla"))
    summary["induction"] = induction.induction(mn_model, vanilla, out_dir, device=device)["accuracy"]
    save_json({"fast": fast, "seed": seed, **summary}, out_dir / "summary.json")
    return summary
