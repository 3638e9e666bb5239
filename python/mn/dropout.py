"""Entry dropout: which dictionary entries query i may attend to (DESIGN §5).

The mask is a pure function of (seed, i, j) so every backend (references, Triton, native) draws the
same one, forward and backward regenerate it instead of storing a B x S mask, and a chunk of entries
can draw just its own columns. All arithmetic is modulo 2^32 (emulated here in int64):

    x = (seed*0x9E3779B1) ^ (i*0x85EBCA77) ^ (j*0xC2B2AE3D)
    x ^= x >> 16; x *= 0x85EBCA6B; x ^= x >> 13; x *= 0xC2B2AE35; x ^= x >> 16
    entry j is dropped for query i  iff  (x >> 8) < p * 2^24
"""
from __future__ import annotations

import math

import torch

_M32 = 0xFFFFFFFF


def drop_threshold(p: float) -> int:
    """The integer t with `(x >> 8) < p * 2^24  iff  (x >> 8) < t` for every integer x >> 8: t = ceil(p * 2^24).
    Every backend compares against this integer."""
    return math.ceil(p * (1 << 24))


def keep_mask(seed: int, rows: torch.Tensor, cols: torch.Tensor, p: float) -> torch.Tensor:
    """Boolean keep-mask of shape (len(rows), len(cols)); True where query rows[a] sees entry cols[b].

    rows, cols: 1-d integer tensors of batch-row indices i and entry indices j.
    """
    i = (rows.to(torch.int64) * 0x85EBCA77) & _M32
    j = (cols.to(torch.int64) * 0xC2B2AE3D) & _M32
    x = ((seed * 0x9E3779B1) & _M32) ^ i[:, None] ^ j[None, :]
    x = x ^ (x >> 16)
    x = (x * 0x85EBCA6B) & _M32
    x = x ^ (x >> 13)
    x = (x * 0xC2B2AE35) & _M32
    x = x ^ (x >> 16)
    return (x >> 8) >= drop_threshold(p)
