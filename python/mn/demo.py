"""The main job on shipped data (`mn demo`, or `python -m mn.demo`): vanilla vs Meta-Neighborhoods on
sklearn digits (small convnet; cosine output layer vs the MN head, AdamW, the paper's other settings) and on
the two-spirals toy of the paper's Fig. 1 (a linear classifier alone vs tuned per query by MN).
Prints one results table (`--fast`: a few steps only, for CI)."""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

from .data import make_spirals
from .generic import MetaNeighborhoods

DIGITS_EPOCHS, DIGITS_MILESTONES = 15, [10]


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


def run_digits(*, epochs: int = DIGITS_EPOCHS, seed: int = 0,
               max_steps_per_epoch: int | None = None) -> list[tuple[str, float, float]]:
    """Trains the digits convnet with a cosine output layer (vanilla) and with the MN head (+ auxiliary head);
    best epoch by validation accuracy; returns (name, test accuracy, seconds) rows."""
    from .training import make_config, train

    rows = []
    for name, method in (("convnet + cosine layer (vanilla)", "vanilla"), ("convnet + MN head", "mn")):
        cfg = make_config(flags=dict(dataset="digits", method=method, epochs=epochs, seeds=[seed],
                                     lr_milestones=[m for m in DIGITS_MILESTONES if m < epochs],
                                     max_steps_per_epoch=max_steps_per_epoch, progress=False))
        start = time.perf_counter()
        result = train(cfg, log=lambda line: None)
        rows.append((name, result["runs"][0]["test_accuracy"], time.perf_counter() - start))
    return rows


def run_demo(*, fast: bool = False, seed: int = 0) -> list[tuple[str, str, float, float]]:
    """Both tasks, printed as one markdown table; returns (task, model, test accuracy, seconds) rows."""
    start = time.perf_counter()
    digits = run_digits(epochs=1, seed=seed, max_steps_per_epoch=2) if fast else run_digits(seed=seed)
    spirals = run_spirals(steps=20 if fast else 500, seed=seed)
    rows = [("digits (1293 train / 144 val / 360 test)", *r) for r in digits]
    rows += [("two spirals (1000 / 1000)", *r) for r in spirals]
    print("| task | model | test accuracy | train time (s) |\n| --- | --- | --- | --- |")
    for task, name, acc, seconds in rows:
        print(f"| {task} | {name} | {acc:.3f} | {seconds:.1f} |")
    print(f"\ntotal {time.perf_counter() - start:.0f} s" + ("  (fast mode: a smoke run, not a result)" if fast else ""))
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mn.demo", description=__doc__)
    parser.add_argument("--fast", action="store_true", help="a few steps only (CI smoke run)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    run_demo(fast=args.fast, seed=args.seed)


if __name__ == "__main__":
    main()
