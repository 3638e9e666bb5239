"""The two-spirals toy of the paper's Fig. 1: two interleaved spirals that no linear classifier separates."""
from __future__ import annotations

import math

import torch


def make_spirals(n_per_class: int, *, turns: float = 1.5, noise: float = 0.02, seed: int = 0):
    """Points x (2 n_per_class, 2) in about [-1, 1]^2 and labels y (2 n_per_class,) in {0, 1}.

    Class c lies on the arm r = t, angle = 2 pi turns t + pi c for t ~ U(0.05, 1), plus N(0, noise) jitter.
    Deterministic given seed.
    """
    if isinstance(n_per_class, bool) or not isinstance(n_per_class, int) or n_per_class < 1:
        raise ValueError(f"n_per_class must be a positive integer, got {n_per_class!r}")
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(2, n_per_class, generator=g) * 0.95 + 0.05
    angle = 2 * math.pi * turns * t + math.pi * torch.arange(2)[:, None]
    x = torch.stack([t * torch.cos(angle), t * torch.sin(angle)], dim=-1)
    x = x + noise * torch.randn(x.shape, generator=g)
    y = torch.arange(2)[:, None].expand(2, n_per_class)
    return x.reshape(-1, 2), y.reshape(-1)
