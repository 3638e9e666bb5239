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
from .interpret import attention_vectors
from .knn import knn_neighbours, knn_predict
from .plotting import new_figure, outline_legend, save_json, save_png, show_image
from .stats import paired_difference, summary
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
    """Both models with their (coarse) data and their training seeds (MN, vanilla), and checks that they match."""
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
    return cfg, data, mn[2], vanilla[2], (int(mn[3]["seed"]), int(vanilla[3]["seed"]))


def _load_fine(cfg, coarse):
    """The fine-labelled twin of a pair's coarse data (same split), checked to hold the same examples."""
    fine = prepare(load_dataset(FINE_OF[cfg.dataset], cfg.data_dir), val_fraction=cfg.val_fraction,
                   split_seed=cfg.split_seed)
    if not (torch.equal(fine.train.x, coarse.train.x) and torch.equal(fine.test.x, coarse.test.x)):
        raise AnalysisError(f"{FINE_OF[cfg.dataset]} does not hold the same examples as {cfg.dataset}")
    return fine


@torch.no_grad()
def _accuracies(cfg, coarse, fine, mn_model, vanilla_model, k, device, shown) -> tuple[dict, dict]:
    """{model: {level: kNN test accuracy}} and {model: (shown queries, min(5, k)) neighbour indices} of one pair."""
    accuracy, neighbours = {}, {}
    for name, model in (("mn", mn_model), ("vanilla", vanilla_model)):
        memory = representations(model, coarse, coarse.train.x, device=device)
        queries = representations(model, coarse, coarse.test.x, device=device)
        accuracy[name] = {}
        for level, split in (("coarse", coarse), ("fine", fine)):
            predicted = knn_predict(memory, split.train.y.to(device), queries, k).cpu()
            accuracy[name][level] = (predicted == split.test.y).float().mean().item()
        neighbours[name] = knn_neighbours(memory, queries[shown.to(device)], min(5, k)).cpu().tolist()
    return accuracy, neighbours


@torch.no_grad()
def induction(checkpoint, baseline, out_dir, *, k: int = 10, data_dir=None, device="cpu") -> dict:
    """kNN accuracy on the coarse and the fine labels of the test split, for the MN model (`checkpoint`) and
    the vanilla model (`baseline`), both trained on the same coarse data set. Several pairs (e.g. one per seed):
    lists of checkpoints and baselines of equal length, paired by position, all on the same data and split.
    Writes OUT_DIR/induction.png, induction_retrievals.png (image data; the first pair's) and induction.json;
    returns the JSON's record: accuracy {model: {level: mean over the pairs}}, pairs [{checkpoint, baseline,
    seeds (MN's, vanilla's), accuracy}], summary {model: {level: {values, n, mean, std}}} and difference
    {level: the paired difference mn - vanilla, {values, n, mean, std, ci95}} (std and ci95 None for one pair)."""
    checkpoints = [checkpoint] if isinstance(checkpoint, (str, Path)) else list(checkpoint)
    baselines = [baseline] if isinstance(baseline, (str, Path)) else list(baseline)
    if not checkpoints or len(checkpoints) != len(baselines):
        raise AnalysisError(f"checkpoints and baselines pair up by position: got {len(checkpoints)} MN checkpoint(s) "
                            f"and {len(baselines)} vanilla one(s)")
    pairs, first = [], None
    for mn_path, vanilla_path in zip(checkpoints, baselines):
        cfg, coarse, mn_model, vanilla_model, seeds = _load_pair(mn_path, vanilla_path, data_dir, device)
        if first is None:
            fine = _load_fine(cfg, coarse)              # loaded once: every later pair shares the data and split
            first = cfg, coarse, fine
            if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(coarse.train):
                raise AnalysisError(f"k must be an integer in [1, {len(coarse.train)}] (the training split's size), "
                                    f"got {k!r}")
            shown = torch.linspace(0, len(coarse.test) - 1, min(QUERIES_SHOWN, len(coarse.test))).long()
        elif (cfg.dataset, cfg.split_seed, cfg.val_fraction) != (first[0].dataset, first[0].split_seed,
                                                                  first[0].val_fraction):
            raise AnalysisError(f"{mn_path} was trained on {cfg.dataset} (split_seed {cfg.split_seed}), "
                                f"{checkpoints[0]} on {first[0].dataset} (split_seed {first[0].split_seed}): "
                                "every pair must share the data and its split")
        accuracy, neighbours = _accuracies(cfg, coarse, fine, mn_model, vanilla_model, k, device, shown)
        pairs.append({"checkpoint": str(mn_path), "baseline": str(vanilla_path), "seeds": list(seeds),
                      "accuracy": accuracy, "neighbours": neighbours})
    cfg, coarse, fine = first
    levels, names = ("coarse", "fine"), ("mn", "vanilla")
    summaries = {name: {level: summary([p["accuracy"][name][level] for p in pairs]) for level in levels}
                 for name in names}
    record = {"checkpoint": pairs[0]["checkpoint"], "baseline": pairs[0]["baseline"], "dataset": cfg.dataset,
              "fine_dataset": FINE_OF[cfg.dataset], "k": k, "memory": len(coarse.train), "queries": len(coarse.test),
              "accuracy": {name: {level: summaries[name][level]["mean"] for level in levels} for name in names},
              "summary": summaries,
              "difference": {level: paired_difference([p["accuracy"]["mn"][level] for p in pairs],
                                                      [p["accuracy"]["vanilla"][level] for p in pairs])
                             for level in levels},
              "pairs": [{key: p[key] for key in ("checkpoint", "baseline", "seeds", "accuracy")} for p in pairs],
              "neighbours": pairs[0]["neighbours"], "shown_queries": shown.tolist()}
    out_dir = Path(out_dir)
    save_json(record, out_dir / "induction.json")
    _plot_accuracy(record, out_dir / "induction.png")
    if coarse.data.kind == "image":
        _plot_retrievals(record, fine, out_dir / "induction_retrievals.png")
    return record


def _plot_accuracy(record: dict, path: Path) -> None:
    fig = new_figure(4.8, 3.4)
    ax = fig.add_subplot()
    summaries, n = record["summary"], len(record["pairs"])
    for offset, (name, color) in enumerate((("mn", "tab:blue"), ("vanilla", "tab:gray"))):
        where = [i + 0.38 * offset for i in range(2)]
        levels = [summaries[name]["coarse"], summaries[name]["fine"]]
        bars = ax.bar(where, [100 * s["mean"] for s in levels], width=0.36, color=color,
                      yerr=[100 * s["std"] for s in levels] if n > 1 else None, capsize=3,
                      label="MN: attention vectors" if name == "mn" else "vanilla: features")
        ax.bar_label(bars, fmt="%.1f", fontsize=8, label_type="center", color="white")
        if n > 1:
            ax.scatter([x for x, s in zip(where, levels) for _ in s["values"]],
                       [100 * v for s in levels for v in s["values"]], s=9, color="black", zorder=3, linewidths=0)
    if n > 1:
        ax.scatter([], [], s=9, color="black", linewidths=0, label="single pairs (seeds)")
    ax.set_xticks([0.19, 1.19], [f"coarse ({record['dataset']})", f"fine ({record['fine_dataset']})"])
    spread = f"mean ± std over {n} pairs" if n > 1 else "one pair"
    ax.set(xlabel="labels the kNN classifier predicts", ylabel=f"{record['k']}-NN test accuracy (%)", ylim=(0, 105),
           title=f"induction accuracy (trained on {record['dataset']})\n{spread}")
    ax.title.set_fontsize(9)
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
