"""k-nearest-neighbour classification by cosine similarity, chunked over the queries (the induction accuracy
of Fig. 6: a kNN classifier on features z or on attention vectors)."""
from __future__ import annotations

import torch

from mn_kernels.rownorm import normalize

from .._validate import check_positive

CHUNK = 1024   # queries per chunk: memory O(CHUNK · N_memory)


@torch.no_grad()
def knn_neighbours(memory: torch.Tensor, queries: torch.Tensor, k: int, chunk_size: int = CHUNK) -> torch.Tensor:
    """(Q, k) indices into memory (N, d) of each query's (Q, d) k most cosine-similar rows, most similar first.
    Memory: a normalised copy of `memory` (N x d) plus one chunk of similarities (chunk_size x N)."""
    if memory.dim() != 2 or queries.dim() != 2 or memory.shape[1] != queries.shape[1]:
        raise ValueError(f"memory (N, d) and queries (Q, d) must share d, got {tuple(memory.shape)} and "
                         f"{tuple(queries.shape)}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(memory):
        raise ValueError(f"k must be an integer in [1, {len(memory)}] (the memory size), got {k!r}")
    check_positive("chunk_size", chunk_size, integer=True)
    mh = normalize(memory)
    return torch.cat([(normalize(q) @ mh.T).topk(k, dim=1).indices for q in queries.split(chunk_size)])


@torch.no_grad()
def knn_predict(memory: torch.Tensor, labels: torch.Tensor, queries: torch.Tensor, k: int,
                chunk_size: int = CHUNK) -> torch.Tensor:
    """(Q,) majority label of each query's k nearest memory rows (cosine). A tie between labels goes to the one
    whose nearest occurrence ranks first (the 1-NN label among the tied), not to a fixed label order."""
    if labels.shape != memory.shape[:1]:
        raise ValueError(f"labels must have shape ({len(memory)},), got {tuple(labels.shape)}")
    votes = labels[knn_neighbours(memory, queries, k, chunk_size)]                 # Q x k, nearest first
    num_labels = int(labels.max()) + 1
    counts = torch.zeros(len(queries), num_labels, dtype=torch.long, device=votes.device)
    counts.scatter_add_(1, votes, torch.ones_like(votes))
    # closeness of each label's nearest occurrence: k - rank (0 for labels not among the k)
    closeness = torch.zeros_like(counts).scatter_reduce_(
        1, votes, (k - torch.arange(k, device=votes.device)).expand_as(votes).contiguous(), reduce="amax")
    return (counts * (k + 1) + closeness).argmax(1)           # count first; closeness < k + 1 only breaks ties
