"""Figure plumbing shared by the analyses: matplotlib without pyplot (no global state, no display), PNG and
GIF writing, the JSON next to each figure, images of a data set's stored inputs and the legend of their green /
red outlines."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch

HOW_TO_INSTALL = 'pip install "mn[analysis]" (or pip install matplotlib)'


class MissingPlotting(ImportError):
    """matplotlib is not installed (the message says how to install it)."""


def require_matplotlib():
    """(Figure, FigureCanvasAgg) of matplotlib; MissingPlotting says how to install it. Analyses that train call
    this first, so a missing matplotlib stops them before the training, not after."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise MissingPlotting(f"mn analyze draws its figures with matplotlib, which is not installed: "
                              f"{HOW_TO_INSTALL}") from e
    return Figure, FigureCanvasAgg


def new_figure(width: float, height: float):
    """A matplotlib Figure of width x height inches, drawn by the Agg canvas (no pyplot, no display)."""
    Figure, FigureCanvasAgg = require_matplotlib()
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, path: Path, dpi: int = 110) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def rgb_frame(fig, dpi: int = 80) -> np.ndarray:
    """The figure rendered to an (H, W, 3) uint8 array (one frame of an animation)."""
    fig.set_dpi(dpi)
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def save_gif(frames: list[np.ndarray], path: Path, seconds_per_frame: float = 0.12) -> Path:
    """An animated GIF of equally sized RGB frames, looping, the last frame held for a second."""
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    durations = [int(seconds_per_frame * 1000)] * (len(images) - 1) + [1000]
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:], duration=durations, loop=0)
    return path


def fresh_dir(path: Path) -> Path:
    """`path` emptied (the analysis' own earlier training output: a rerun replaces it rather than appending)."""
    if path.exists():
        shutil.rmtree(path)
    return path


def save_json(record: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def displayable(x: torch.Tensor) -> np.ndarray:
    """A stored image (C, H, W) -- uint8 0..255, or float of any range (scaled to its own min..max) -- as (H, W)
    grey or (H, W, 3) RGB in [0, 1]."""
    x = x.detach().cpu()
    x = x.float() / 255.0 if x.dtype == torch.uint8 else (x - x.min()) / (x.max() - x.min()).clamp_min(1e-12)
    return x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).clamp(0, 1).numpy()


def show_image(ax, x: torch.Tensor, *, edge: str | None = None) -> None:
    """Draws a stored image on ax without ticks; `edge` outlines it in that colour (thick frame)."""
    ax.imshow(displayable(x), cmap="gray" if x.shape[0] == 1 else None, vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(edge is not None)
        if edge is not None:
            spine.set_edgecolor(edge)
            spine.set_linewidth(3)


def outline_legend(fig, same: str, other: str, ncols: int = 2) -> None:
    """Below the grid: what green and red (outlines of images, dots of tabular samples) mean."""
    from matplotlib.patches import Patch

    handles = [Patch(facecolor="none", edgecolor="tab:green", linewidth=3, label=f"green: {same}"),
               Patch(facecolor="none", edgecolor="tab:red", linewidth=3, label=f"red: {other}")]
    fig.legend(handles=handles, loc="outside lower center", ncols=ncols, fontsize=9, frameon=False)
