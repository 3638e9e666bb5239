"""k-nearest-neighbour classification by cosine similarity, chunked over the queries (the induction accuracy
of Fig. 6: a kNN classifier on features z or on attention vectors)."""
from __future__ import annotations

import torch

from ..reference._common import normalize

CHUNK = 1024   # queries per chunk: memory O(CHUNK · N_memory)


@torch.no_grad()
def knn_neighbours(memory: torch.Tensor, queries: torch.Tensor, k: int, chunk_size: int = CHUNK) -> torch.Tensor:
    """(Q, k) indices into memory (N, d) of each query's (Q, d) k most cosine-similar rows, most similar first."""
    if memory.dim() != 2 or queries.dim() != 2 or memory.shape[1] != queries.shape[1]:
        raise ValueError(f"memory (N, d) and queries (Q, d) must share d, got {tuple(memory.shape)} and "
                         f"{tuple(queries.shape)}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(memory):
        raise ValueError(f"k must be an integer in [1, {len(memory)}] (the memory size), got {k!r}")
    mh = normalize(memory)
    return torch.cat([(normalize(q) @ mh.T).topk(k, dim=1).indices for q in queries.split(chunk_size)])


@torch.no_grad()
def knn_predict(memory: torch.Tensor, labels: torch.Tensor, queries: torch.Tensor, k: int,
                chunk_size: int = CHUNK) -> torch.Tensor:
    """(Q,) majority label of each query's k nearest memory rows (cosine); ties go to the smaller label."""
    if labels.shape != memory.shape[:1]:
        raise ValueError(f"labels must have shape ({len(memory)},), got {tuple(labels.shape)}")
    votes = labels[knn_neighbours(memory, queries, k, chunk_size)]                 # Q x k
    counts = torch.zeros(len(queries), int(labels.max()) + 1, dtype=torch.long, device=votes.device)
    counts.scatter_add_(1, votes, torch.ones_like(votes))
    return counts.argmax(1)                     # argmax returns the first maximum: the smaller label
