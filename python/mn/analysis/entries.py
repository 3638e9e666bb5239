"""Fig. 5: what dictionary entries mean. For chosen entries, the k test samples nearest to the key k_j (by
the similarity the attention uses: cosine for the MN head, the layer's own for the generic layer), shown with
the entry's class read from its value v_j; outlines say whether each neighbour has that class. Over all
entries, the share of neighbours of the entry's class measures how consistent entries are."""
from __future__ import annotations

from pathlib import Path

import torch

from ..training import load_trained
from .interpret import entry_classes
from .plotting import new_figure, outline_legend, save_json, save_png, show_image
from .trained import AnalysisError, embed, mn_layer, similarity

MAX_SHOWN = 12    # entries in the figure (the paper shows 12)
MAX_NEIGHBOURS_SHOWN = 10   # neighbours per entry in the figure (the JSON holds all k)
CHUNK = 1024      # entries per chunk of the all-entries consistency: memory O(CHUNK · N_test)


def default_entries(values: torch.Tensor, limit: int = MAX_SHOWN) -> list[int]:
    """For each of the first `limit` classes that is some entry's most likely class, the entry most confident
    in it (highest value probability among the entries whose argmax it is)."""
    classes, chosen = values.argmax(1), []
    for c in range(values.shape[1]):
        members = (classes == c).nonzero().flatten()
        if len(members) and len(chosen) < limit:
            chosen.append(int(members[values[members, c].argmax()]))
    return chosen


@torch.no_grad()
def nearest_samples(layer, features: torch.Tensor, entries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(attention logits (E, k), indices (E, k)) of the k samples (rows of features (N, n)) most similar to each
    entry's key, most similar first; the logits are the attention's (gamma cos, or -gamma distance)."""
    return similarity(layer, features, entries).T.topk(k, dim=1)


@torch.no_grad()
def entry_neighbours(checkpoint, out_dir, *, entries: list[int] | None = None, k: int = 5, data_dir=None,
                     device="cpu") -> dict:
    """Writes OUT_DIR/entries.png and entries.json; returns the JSON's record: for each chosen entry its class,
    class probability, neighbours (test indices), their labels, attention logits and the share of its class; and
    `consistency`, that share averaged over all S entries."""
    cfg, data, model, _ = load_trained(checkpoint, data_dir=data_dir, device=device)
    layer = mn_layer(model, checkpoint)
    if data.data.task != "classification":
        raise AnalysisError(f"checkpoint {checkpoint} is a regression model; entry classes need a classifier")
    values, classes = entry_classes(layer)
    S = values.shape[0]
    entries = default_entries(values) if entries is None else entries
    bad = [e for e in entries if not 0 <= e < S]
    if bad:
        raise AnalysisError(f"entries must be indices in [0, {S}), got {bad}")
    if not 1 <= k <= len(data.test):
        raise AnalysisError(f"k must be in [1, {len(data.test)}] (the test split's size), got {k}")
    features = embed(model, data, data.test.x, device=device)
    labels = data.test.y.to(device)
    # every entry's k nearest samples, entries in chunks (memory O(CHUNK · N) + S k)
    sims, idx = (torch.cat(parts) for parts in zip(*(
        nearest_samples(layer, features, torch.arange(start, min(start + CHUNK, S), device=device), k)
        for start in range(0, S, CHUNK))))
    agree = (labels[idx] == classes[:, None]).float().mean(1)        # share of each entry's neighbours of its class
    rows = [{"entry": e, "class": int(classes[e]), "class_probability": values[e, classes[e]].item(),
             "neighbours": idx[e].tolist(), "neighbour_labels": labels[idx[e]].tolist(),
             "attention_logits": sims[e].tolist(), "share_of_class": agree[e].item()} for e in entries]
    record = {"checkpoint": str(checkpoint), "dataset": cfg.dataset, "k": k, "num_entries": S,
              "consistency": agree.mean().item(), "entries": rows}
    out_dir = Path(out_dir)
    save_json(record, out_dir / "entries.json")
    _plot(record, data, out_dir / "entries.png")
    return record


def _plot(record: dict, data, path: Path) -> None:
    rows, k = record["entries"][:MAX_SHOWN], min(record["k"], MAX_NEIGHBOURS_SHOWN)
    names = data.data.class_names
    fig = new_figure(max(6.4, 1.0 + 1.1 * k), 1.15 * len(rows) + 1.0)          # room for the title and legend
    grid = fig.add_gridspec(len(rows), k + 1, width_ratios=[2.2] + [1] * k)
    for r, row in enumerate(rows):
        label = fig.add_subplot(grid[r, 0])
        label.axis("off")
        name = names[row["class"]] if names else str(row["class"])
        label.text(0.0, 0.5, f"entry {row['entry']}\nclass {name}\n(p = {row['class_probability']:.2f})",
                   va="center", fontsize=9)
        for c, (i, y) in enumerate(zip(row["neighbours"][:k], row["neighbour_labels"][:k])):
            ax = fig.add_subplot(grid[r, c + 1])
            edge = "tab:green" if y == row["class"] else "tab:red"
            if data.data.kind == "image":
                show_image(ax, data.test.x[i], edge=edge)
            else:
                _show_point(ax, data, i, edge)
    fig.suptitle(f"{record['dataset']}: the {k} test samples nearest to each entry's key\n"
                 f"(all {record['num_entries']} entries: {100 * record['consistency']:.1f}% of the neighbours have "
                 f"the entry's class)", fontsize=10)
    outline_legend(fig, "of the entry's class (its value's argmax)", "of another class", ncols=1)
    save_png(fig, path)


def _show_point(ax, data, i: int, edge: str) -> None:
    """A tabular sample as a dot among the test split (first two input dimensions)."""
    x = data.test.x
    ax.scatter(x[:, 0], x[:, 1], s=1, color="0.8")
    ax.scatter(x[i, 0], x[i, 1], s=30, color=edge)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("$x_1$", fontsize=7, labelpad=1)
    ax.set_ylabel("$x_2$", fontsize=7, labelpad=1)
