"""Fig. 6 and the induction accuracy: train on coarse labels, then classify the fine labels with a kNN
classifier (Huh et al. 2016). The MN model's kNN compares attention vectors [w(z_i, k_1) .. w(z_i, k_S)], the
vanilla model's compares features z_i (paper §Analysis). Memory: the training split; queries: the test split;
cosine similarity, majority vote of k neighbours (a tie goes to the nearest tied label). The figure: accuracies,
and for a few test queries the training images each model retrieves, outlined green when they share the query's
fine label.

Memory use, MN: the training split's attention vectors, N_train x S floats, and the kNN's normalised copy of
them: 2 N_train S floats (CIFAR-100: 45000 x 10000 -> 3.6 GB in float32), on the analysis device."""
from __future__ import annotations

from pathlib import Path

import torch

from ..data import FINE_OF, load_dataset, prepare
from ..layers import MetaNeighborhoodsHead
from ..training import load_trained
from ..training.methods import MNImageClassifier
from .entries import outline_legend
from .interpret import attention_vectors
from .knn import knn_neighbours, knn_predict
from .plotting import new_figure, save_json, save_png, show_image
from .trained import AnalysisError, embed, mn_layer

QUERIES_SHOWN = 6


@torch.no_grad()
def representations(model, data, x, *, device, batch_size: int = 512) -> torch.Tensor:
    """(N, d) what the kNN compares: attention vectors (N, S) for an MN image model, features z (N, n) else."""
    z = embed(model, data, x, batch_size=batch_size, device=device)
    if not isinstance(model, MNImageClassifier):
        return z
    head = model.classifier.head
    out = z.new_empty(len(z), head.keys.shape[0])                  # filled in place: no second N x S copy
    for start in range(0, len(z), batch_size):
        out[start:start + batch_size] = attention_vectors(z[start:start + batch_size], head.keys, gamma=head.gamma)
    return out


def _load_pair(checkpoint, baseline, data_dir, device):
    """Both models with their (coarse) data, the fine-labelled twin of that data, and checks that they match."""
    mn = load_trained(checkpoint, data_dir=data_dir, device=device)
    vanilla = load_trained(baseline, data_dir=data_dir, device=device)
    for (cfg, *_), path, method in ((mn, checkpoint, "mn"), (vanilla, baseline, "vanilla")):
        if cfg.method != method:
            raise AnalysisError(f"checkpoint {path} holds method {cfg.method!r}; expected {method!r} here")
        if cfg.dataset not in FINE_OF:
            raise AnalysisError(f"checkpoint {path} was trained on {cfg.dataset!r}; the induction analysis needs a "
                                f"coarse-labelled data set: {', '.join(FINE_OF)}")
    if not isinstance(mn_layer(mn[2], checkpoint), MetaNeighborhoodsHead):
        raise AnalysisError(f"checkpoint {checkpoint} is not an MN image classifier")
    cfg, data = mn[0], mn[1]
    if vanilla[0].dataset != cfg.dataset or vanilla[0].split_seed != cfg.split_seed \
            or vanilla[0].val_fraction != cfg.val_fraction:
        raise AnalysisError(f"{checkpoint} and {baseline} were trained on different data or splits "
                            f"({cfg.dataset}, split_seed {cfg.split_seed} vs {vanilla[0].dataset}, "
                            f"split_seed {vanilla[0].split_seed})")
    fine = prepare(load_dataset(FINE_OF[cfg.dataset], cfg.data_dir), val_fraction=cfg.val_fraction,
                   split_seed=cfg.split_seed)
    if not (torch.equal(fine.train.x, data.train.x) and torch.equal(fine.test.x, data.test.x)):
        raise AnalysisError(f"{FINE_OF[cfg.dataset]} does not hold the same examples as {cfg.dataset}")
    return cfg, data, fine, mn[2], vanilla[2]


@torch.no_grad()
def induction(checkpoint, baseline, out_dir, *, k: int = 10, data_dir=None, device="cpu") -> dict:
    """kNN accuracy on the coarse and the fine labels of the test split, for the MN model (`checkpoint`) and
    the vanilla model (`baseline`), both trained on the same coarse data set. Writes OUT_DIR/induction.png,
    induction_retrievals.png (image data) and induction.json; returns the JSON's record."""
    cfg, coarse, fine, mn_model, vanilla_model = _load_pair(checkpoint, baseline, data_dir, device)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(coarse.train):
        raise AnalysisError(f"k must be an integer in [1, {len(coarse.train)}] (the training split's size), got {k!r}")
    record = {"checkpoint": str(checkpoint), "baseline": str(baseline), "dataset": cfg.dataset,
              "fine_dataset": FINE_OF[cfg.dataset], "k": k, "memory": len(coarse.train), "queries": len(coarse.test),
              "accuracy": {}, "neighbours": {}}
    shown = torch.linspace(0, len(coarse.test) - 1, min(QUERIES_SHOWN, len(coarse.test))).long()
    for name, model in (("mn", mn_model), ("vanilla", vanilla_model)):
        memory = representations(model, coarse, coarse.train.x, device=device)
        queries = representations(model, coarse, coarse.test.x, device=device)
        record["accuracy"][name] = {}
        for level, split in (("coarse", coarse), ("fine", fine)):
            predicted = knn_predict(memory, split.train.y.to(device), queries, k).cpu()
            record["accuracy"][name][level] = (predicted == split.test.y).float().mean().item()
        record["neighbours"][name] = knn_neighbours(memory, queries[shown.to(device)], min(5, k)).cpu().tolist()
    record["shown_queries"] = shown.tolist()
    out_dir = Path(out_dir)
    save_json(record, out_dir / "induction.json")
    _plot_accuracy(record, out_dir / "induction.png")
    if coarse.data.kind == "image":
        _plot_retrievals(record, fine, out_dir / "induction_retrievals.png")
    return record


def _plot_accuracy(record: dict, path: Path) -> None:
    fig = new_figure(4.8, 3.4)
    ax = fig.add_subplot()
    acc = record["accuracy"]
    for offset, (name, color) in enumerate((("mn", "tab:blue"), ("vanilla", "tab:gray"))):
        heights = [100 * acc[name]["coarse"], 100 * acc[name]["fine"]]
        bars = ax.bar([i + 0.38 * offset for i in range(2)], heights, width=0.36, color=color,
                      label="MN: attention vectors" if name == "mn" else "vanilla: features")
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks([0.19, 1.19], [f"coarse ({record['dataset']})", f"fine ({record['fine_dataset']})"])
    ax.set(xlabel="labels the kNN classifier predicts", ylabel=f"{record['k']}-NN test accuracy (%)", ylim=(0, 105),
           title=f"induction accuracy (trained on {record['dataset']})")
    ax.title.set_fontsize(10)
    ax.legend(loc="lower left", fontsize=8)
    save_png(fig, path)


def _plot_retrievals(record: dict, fine, path: Path) -> None:
    queries, n = record["shown_queries"], len(record["neighbours"]["mn"][0])
    fig = new_figure(2 * n + 1.6, 1.05 * len(queries) + 0.6)
    # columns: query, gap, n MN retrievals, gap, n vanilla retrievals
    grid = fig.add_gridspec(len(queries), 2 * n + 3, width_ratios=[1, 0.3] + [1] * n + [0.3] + [1] * n)
    for r, q in enumerate(queries):
        show_image(fig.add_subplot(grid[r, 0]), fine.test.x[q], edge="black")
        for block, name in enumerate(("mn", "vanilla")):
            for c, i in enumerate(record["neighbours"][name][r]):
                ax = fig.add_subplot(grid[r, 2 + block * (n + 1) + c])
                ok = int(fine.train.y[i]) == int(fine.test.y[q])
                show_image(ax, fine.train.x[i], edge="tab:green" if ok else "tab:red")
                if r == 0 and c == 0:
                    ax.set_title("MN (attention)" if name == "mn" else "vanilla (features)", fontsize=9, loc="left")
    fig.suptitle(f"test query (left) and its {n} nearest training images under each model, trained on coarse "
                 f"labels", fontsize=10)
    outline_legend(fig, "the query's fine label", "another fine label")
    save_png(fig, path)
