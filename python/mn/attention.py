"""The attention over the dictionary in plain torch, for the references and the generic layer: which entries a
query sees under entry dropout, and the softmax over them (docs/design.md, "Forward" and "Entry dropout")."""
from __future__ import annotations

import torch

from mn_kernels.dropout import keep_mask


def entry_keep(B: int, cols: torch.Tensor, entry_dropout: float, seed: torch.Tensor | None,
               device) -> torch.Tensor | None:
    """Keep-mask (B, len(cols)) for entries `cols`, or None without dropout. seed: the seed's part of the hash,
    a 0-d int64 tensor (`mn_kernels.dropout.seed_mix_tensor`)."""
    if entry_dropout == 0.0:
        return None
    return keep_mask(seed, torch.arange(B, device=device), cols, entry_dropout)


def attention_weights(scores: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """w (B, S) = softmax_j(scores) over the kept entries; a query with no kept entry gets w = 0."""
    if keep is None:
        return torch.softmax(scores, dim=1)
    # Rows with no kept entry use unmasked scores: finite softmax (no NaN in backward), then zeroed by keep.
    none_kept = ~keep.any(dim=1, keepdim=True)
    return torch.softmax(scores.masked_fill(~keep & ~none_kept, float("-inf")), dim=1) * keep
