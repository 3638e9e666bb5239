"""Entry dropout: which dictionary entries query i may attend to (docs/design.md, "Entry dropout").

The mask is a pure function of (seed, i, j), so every backend (references, Triton, C++/CUDA) draws the same
one, forward and backward regenerate it instead of storing a B x S mask, and a chunk of entries can draw just
its own columns. All arithmetic is modulo 2^32 (emulated here in int64)::

    x = (seed * SEED_MUL) ^ (i * ROW_MUL) ^ (j * COL_MUL)
    x ^= x >> 16; x *= MIX1; x ^= x >> 13; x *= MIX2; x ^= x >> 16
    entry j is dropped for query i  iff  (x >> 8) < p * 2^24

The constants live here only (csrc/dropout_hash.h mirrors them for C++; tests check the two agree).
"""
import math

import torch

SEED_MUL, ROW_MUL, COL_MUL = 0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D
MIX1, MIX2 = 0x85EBCA6B, 0xC2B2AE35
_M32 = 0xFFFFFFFF


def seed_mix(seed: int) -> int:
    """seed * SEED_MUL mod 2^32, the seed's part of the hash, as an unsigned 32-bit integer."""
    return (int(seed) * SEED_MUL) & _M32


def seed_mix_tensor(seed, device) -> torch.Tensor:
    """The seed's part of the hash as a 0-d int64 tensor on `device`, the form every kernel reads (from memory, so
    that a step needs no host value and a CUDA graph replays with the seed its tensor holds then). `seed`: a
    Python int, or an integer tensor; either is taken modulo 2^32, so both give the same masks (computed on the
    tensor's device, no host read)."""
    if isinstance(seed, torch.Tensor):
        s = seed.to(device=device, dtype=torch.int64).reshape(()) & _M32
        # s * SEED_MUL would pass 2^63: multiply 16-bit halves, keeping the products below 2^49.
        lo, hi = s & 0xFFFF, s >> 16
        return (lo * SEED_MUL + (((hi * SEED_MUL) & 0xFFFF) << 16)) & _M32
    return torch.tensor(seed_mix(seed), dtype=torch.int64, device=device)


def drop_threshold(p: float) -> int:
    """The integer t with `(x >> 8) < p * 2^24  iff  (x >> 8) < t` for every integer x >> 8: t = ceil(p * 2^24).
    Every backend compares against this integer."""
    return math.ceil(p * (1 << 24))


def keep_mask(mix, rows: torch.Tensor, cols: torch.Tensor, p: float) -> torch.Tensor:
    """Boolean keep-mask of shape (len(rows), len(cols)); True where query rows[a] sees entry cols[b].

    mix: the seed's part of the hash, `seed_mix_tensor(...)` (or `seed_mix(...)`, an int); rows, cols: 1-d
    integer tensors of batch-row indices i and entry indices j.
    """
    i = (rows.to(torch.int64) * ROW_MUL) & _M32
    j = (cols.to(torch.int64) * COL_MUL) & _M32
    x = mix ^ i[:, None] ^ j[None, :]
    x = x ^ (x >> 16)
    x = (x * MIX1) & _M32
    x = x ^ (x >> 13)
    x = (x * MIX2) & _M32
    x = x ^ (x >> 16)
    return (x >> 8) >= drop_threshold(p)
