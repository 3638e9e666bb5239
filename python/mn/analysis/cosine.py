"""Fig. 3: does the inner step turn each query's classifier towards it? For every sample of a split,
cos(z_i, w_{y_i}) with the shared classifier W (before) against cos(z_i, phi_{i,y_i}) with the query's
fine-tuned one (after), as a scatter with the identity line; the paper expects most points above it."""
from __future__ import annotations

from pathlib import Path

import torch

from ..layers import MetaNeighborhoodsHead
from ..training import load_trained
from .interpret import target_cosines
from .plotting import new_figure, save_json, save_png
from .trained import AnalysisError, embed, mn_layer


@torch.no_grad()
def cosine_shift(checkpoint, out_dir, *, split: str = "test", data_dir=None, device="cpu",
                 batch_size: int = 256) -> dict:
    """Writes OUT_DIR/cosine.png and cosine.json ({share_above, mean_before, mean_after, before, after, ...});
    returns the JSON's record. Needs an MN image classifier's checkpoint (a cosine classifier is adapted)."""
    cfg, data, model, _ = load_trained(checkpoint, data_dir=data_dir, device=device)
    head = mn_layer(model, checkpoint)
    if not isinstance(head, MetaNeighborhoodsHead):
        raise AnalysisError(f"checkpoint {checkpoint} adapts a {type(head.net).__name__}, not a cosine classifier; "
                            "the cosine analysis needs an MN image classifier (e.g. mn train --dataset digits)")
    if split not in ("test", "val"):
        raise AnalysisError(f"split must be 'test' or 'val', got {split!r}")
    target = data.test if split == "test" else data.val
    if target is None:
        raise AnalysisError(f"{cfg.dataset} has no {split} split in this configuration")
    before, after = [], []
    for start in range(0, len(target), batch_size):
        z = embed(model, data, target.x[start:start + batch_size], device=device)
        b, a = target_cosines(head, z, target.y[start:start + batch_size].to(device))
        before.append(b.cpu())
        after.append(a.cpu())
    before, after = torch.cat(before), torch.cat(after)
    record = {"checkpoint": str(checkpoint), "dataset": cfg.dataset, "split": split, "samples": len(before),
              "inner_steps": head.inner_steps, "share_above": (after > before).float().mean().item(),
              "mean_before": before.mean().item(), "mean_after": after.mean().item(),
              "before": before.tolist(), "after": after.tolist()}
    out_dir = Path(out_dir)
    save_json(record, out_dir / "cosine.json")
    _plot(before, after, record, out_dir / "cosine.png")
    return record


def _plot(before, after, record, path: Path) -> None:
    fig = new_figure(4.6, 4.4)
    ax = fig.add_subplot()
    lo = min(before.min().item(), after.min().item()) - 0.02
    hi = max(before.max().item(), after.max().item()) + 0.02
    ax.scatter(before, after, s=6, alpha=0.5, color="tab:blue", linewidths=0,
               label=f"one {record['split']} sample ({record['samples']})")
    ax.plot([lo, hi], [lo, hi], color="red", linewidth=1.2, label="identity: the step changed nothing")
    ax.set(xlim=(lo, hi), ylim=(lo, hi), aspect="equal",
           xlabel=r"before fine-tuning: $\cos(z_i, w_{y_i})$", ylabel=r"after: $\cos(z_i, \phi_{i,y_i})$",
           title=f"{record['dataset']} {record['split']}: {100 * record['share_above']:.1f}% above the line")
    ax.title.set_fontsize(10)
    ax.legend(loc="upper left", fontsize=8)
    save_png(fig, path)
