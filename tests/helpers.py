"""Tolerances shared by the tests.

Comparisons between two *different* code paths (a chunked and an unchunked sum, a checkpointed recomputation
and a plain forward, a fused kernel and its reference) use a tolerance derived from the dtype: the paths round
differently, and how they round depends on the CPU (AVX-512 or AVX2 reduction widths). Bitwise equality is kept
for determinism claims about one path only (reruns, thread counts, dropout replay).
"""
import torch


def reorder_tol(dtype: torch.dtype, ulps: int = 64) -> dict:
    """rtol/atol for two paths that evaluate the same expression in a different order: `ulps` units of
    rounding of `dtype` (a few per operation, grown by the reductions' length), relative and absolute for
    entries of magnitude ~1."""
    eps = torch.finfo(dtype).eps
    return dict(rtol=ulps * eps, atol=ulps * eps)
