"""The main job on shipped data: a linear classifier alone vs the same linear classifier tuned per query by
Meta-Neighborhoods on the two-spirals toy (paper Fig. 1). Run: `python -m mn.demo`."""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

from .data import make_spirals
from .generic import MetaNeighborhoods


def spirals_models(num_entries: int = 64, gamma: float = 10.0) -> dict[str, nn.Module]:
    """The toy's two contenders: a 2 -> 2 linear classifier, and one tuned per query on `num_entries`
    learnable neighbours with Euclidean attention (Eq. 11) and a soft-label cross-entropy inner loss."""
    return {
        "linear": nn.Linear(2, 2),
        "linear + MN": MetaNeighborhoods(nn.Linear(2, 2), 2, 2, num_entries, similarity="euclidean",
                                         inner_loss="ce", gamma=gamma),
    }


def train_classifier(model: nn.Module, x, y, *, steps: int = 500, lr: float = 1e-2, batch_size: int = 128,
                     seed: int = 0) -> nn.Module:
    """AdamW on minibatches drawn with replacement; returns the model in eval mode."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch_size,), generator=g)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, x, y) -> float:
    return (model(x).argmax(1) == y).float().mean().item()


def run_spirals(*, steps: int = 500, seed: int = 0, n_per_class: int = 500) -> list[tuple[str, float, float]]:
    """Trains both contenders on the toy; returns (name, test accuracy, seconds) rows."""
    x_train, y_train = make_spirals(n_per_class, seed=seed)
    x_test, y_test = make_spirals(n_per_class, seed=seed + 1000)
    torch.manual_seed(seed)
    rows = []
    for name, model in spirals_models().items():
        start = time.perf_counter()
        train_classifier(model, x_train, y_train, steps=steps, seed=seed)
        rows.append((name, accuracy(model, x_test, y_test), time.perf_counter() - start))
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mn.demo", description=__doc__)
    parser.add_argument("--steps", type=int, default=500, help="training steps per model (default 500)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print("two spirals, 1000 train / 1000 test points\n")
    print("| model | test accuracy | train time (s) |\n| --- | --- | --- |")
    for name, acc, seconds in run_spirals(steps=args.steps, seed=args.seed):
        print(f"| {name} | {acc:.3f} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
