"""Fig. 1: learnable neighbours on the two-spirals toy. A linear classifier is tuned per query on S learnable
entries (Euclidean attention, soft-label inner loss: `mn train --dataset spirals --method mn`); the dictionary
is recorded after every epoch. The figure shows the test points (dots, coloured by their predicted class) and the
entries (crosses at their keys, coloured by the class of their value) at the start, middle and end of training,
with the entries' trajectories so far (dotted), and says so in a legend; the GIF shows every epoch.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..data import load_dataset, prepare
from ..training import Run, make_config
from ..training.distributed import setup
from .interpret import entry_classes
from .plotting import fresh_dir, new_figure, require_matplotlib, rgb_frame, save_gif, save_json, save_png

PREDICTION_COLORS = ("tab:blue", "gold")        # test points by predicted class, as in the paper
ENTRY_COLORS = ("tab:green", "tab:red")          # entries by the class of their value


@torch.no_grad()
def snapshot(run: Run) -> dict:
    """The dictionary and the test predictions of the run's model now: keys (S, 2), entry classes (S,),
    predicted test classes (N,), test accuracy."""
    model, data = run.model, run.data
    was_training = model.training
    model.eval()
    layer = model.net
    predicted = model(data.test.x.to(run.ctx.device))[0].argmax(1).cpu()
    model.train(was_training)
    return {"epoch": run.epoch, "keys": layer.keys.detach().cpu().clone(),
            "entry_classes": entry_classes(layer)[1].cpu(), "predicted": predicted,
            "accuracy": (predicted == data.test.y).float().mean().item()}


def learnable_neighbours(out_dir, *, epochs: int = 60, seed: int = 0, num_entries: int = 64, gamma: float = 10.0,
                         device: str = "cpu") -> dict:
    """Trains the toy, writing OUT_DIR/toy.png, toy.gif, toy.json (per-epoch test accuracy and entry positions)
    and the run's checkpoints under OUT_DIR/toy-run (usable by `mn eval`; replaced by a rerun); returns the
    JSON's record."""
    require_matplotlib()
    out_dir = Path(out_dir)
    fresh_dir(out_dir / "toy-run")
    cfg = make_config(flags=dict(dataset="spirals", method="mn", epochs=epochs, num_entries=num_entries, gamma=gamma,
                                 seeds=[seed], device=device, progress=False, out_dir=str(out_dir / "toy-run")))
    data = prepare(load_dataset("spirals"), val_fraction=cfg.val_fraction, split_seed=cfg.split_seed)
    run = Run(cfg, data, setup(cfg.device), seed=seed, run_dir=out_dir / "toy-run" / f"seed{seed}")
    snapshots = [snapshot(run)]
    result = run.fit(on_epoch=lambda r: snapshots.append(snapshot(r)))
    shown = [0, len(snapshots) // 2, len(snapshots) - 1]
    record = {"epochs": run.epoch, "num_entries": num_entries, "gamma": gamma, "seed": seed,
              "test_accuracy_per_epoch": [s["accuracy"] for s in snapshots],
              "shown_epochs": [snapshots[t]["epoch"] for t in shown], "result": result,
              "entry_classes_final": snapshots[-1]["entry_classes"].tolist(),
              "entry_positions": [s["keys"].tolist() for s in snapshots]}
    save_json(record, out_dir / "toy.json")
    x = data.test.x
    fig = new_figure(12, 5.1)
    for ax, t, letter in zip(fig.subplots(1, 3), shown, "abc"):
        _draw(ax, x, snapshots, t, f"({letter}) epoch {snapshots[t]['epoch']}")
    fig.suptitle(f"Learnable neighbours on the two spirals: S = {num_entries} entries, gamma = {gamma:g}, seed {seed}",
                 fontsize=11)
    legend(fig, ncols=3)
    save_png(fig, out_dir / "toy.png")
    frames = []
    for t, snap in enumerate(snapshots):
        fig = new_figure(5.2, 6.4)
        _draw(fig.add_subplot(), x, snapshots, t, f"epoch {snap['epoch']}")
        legend(fig, ncols=1)
        frames.append(rgb_frame(fig))
    save_gif(frames, out_dir / "toy.gif")
    return record


def legend(fig, *, ncols: int) -> None:
    """What the colours and crosses mean, below the panels."""
    from matplotlib.lines import Line2D

    dot = dict(marker="o", linestyle="", markersize=6, markeredgewidth=0)
    cross = dict(marker="X", linestyle="", markersize=9, markeredgecolor="black", markeredgewidth=0.5)
    handles = [Line2D([], [], color=PREDICTION_COLORS[0], label="test point, predicted class 0", **dot),
               Line2D([], [], color=PREDICTION_COLORS[1], label="test point, predicted class 1", **dot),
               Line2D([], [], color=ENTRY_COLORS[0], label="entry $(k_j, v_j)$ at its key, $v_j$'s class 0", **cross),
               Line2D([], [], color=ENTRY_COLORS[1], label="entry $(k_j, v_j)$ at its key, $v_j$'s class 1", **cross),
               Line2D([], [], color="black", linestyle=":", linewidth=1, label="an entry's path since epoch 0")]
    fig.legend(handles=handles, loc="outside lower center", ncols=ncols, fontsize=9, frameon=False)


def _draw(ax, x: torch.Tensor, snapshots: list[dict], t: int, title: str) -> None:
    """Test points coloured by snapshot t's predictions, its entries by class, dotted trajectories up to t."""
    snap = snapshots[t]
    colors = [PREDICTION_COLORS[int(c)] for c in snap["predicted"]]
    ax.scatter(x[:, 0], x[:, 1], s=4, c=colors, linewidths=0)
    path = torch.stack([s["keys"] for s in snapshots[:t + 1]])                          # t+1 x S x 2
    for j in range(path.shape[1]):
        ax.plot(path[:, j, 0], path[:, j, 1], ":", color="black", linewidth=0.6)
    entry_colors = [ENTRY_COLORS[int(c)] for c in snap["entry_classes"]]
    ax.scatter(snap["keys"][:, 0], snap["keys"][:, 1], s=40, c=entry_colors, marker="X", edgecolors="black",
               linewidths=0.5)
    lim = 1.15 * max(x.abs().max().item(), snap["keys"].abs().max().item())
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", xlabel="$x_1$ (input feature 1)",
           ylabel="$x_2$ (input feature 2)", title=f"{title}: test accuracy {snap['accuracy']:.3f}")
    ax.title.set_fontsize(10)
