"""Interpretability helpers for a trained MetaNeighborhoodsHead (the building blocks of the paper's analyses).

attention_topk    the k entries each query attends to most, with their attention weights, computed chunk by
                  chunk over the dictionary: memory O(B·(k + chunk)), never a B x S matrix
attention_vectors the full attention rows (B, S) (Fig. 6 compares queries by them)
entry_classes     each entry's label distribution (softmax of its value logits) and its most likely class
inner_step_size   how far the first inner step moves each query's classifier: ||alpha grad_i|| / ||W||
target_cosines    cos(z_i, w_{y_i}) before and after the inner step(s) (Fig. 3)
"""
from __future__ import annotations

import torch

from mn_kernels.rownorm import normalize

from .._validate import check_positive
from ..functional import adapted_weights, inner_gradient

CHUNK = 8192   # entries per chunk of attention_topk


@torch.no_grad()
def attention_topk(z: torch.Tensor, keys: torch.Tensor, *, gamma: float, k: int = 5, chunk_size: int = CHUNK):
    """Top-k attention of queries z (B, n) over keys (S, n), w_ij = softmax_j(gamma cos(z_i, k_j)).

    Returns (weights (B, k), indices (B, k)), largest first. Exact: the softmax normaliser is accumulated over
    all chunks (log-sum-exp), the top-k merged chunk by chunk.
    """
    check_positive("gamma", gamma)
    check_positive("k", k, integer=True)
    check_positive("chunk_size", chunk_size, integer=True)
    if z.dim() != 2 or keys.dim() != 2 or z.shape[1] != keys.shape[1]:
        raise ValueError(f"z (B, n) and keys (S, n) must share n, got {tuple(z.shape)} and {tuple(keys.shape)}")
    if k > keys.shape[0]:
        raise ValueError(f"k must be at most the number of entries S = {keys.shape[0]}, got {k}")
    zh, kh = normalize(z), normalize(keys)
    B = z.shape[0]
    top_s = z.new_full((B, 0), float("-inf"))
    top_i = torch.empty(B, 0, dtype=torch.long, device=z.device)
    lse = z.new_full((B,), float("-inf"))
    for start in range(0, kh.shape[0], chunk_size):
        s = gamma * zh @ kh[start:start + chunk_size].T                               # B x chunk
        lse = torch.logaddexp(lse, torch.logsumexp(s, dim=1))
        cand_s = torch.cat([top_s, s], dim=1)
        cand_i = torch.cat([top_i, torch.arange(start, start + s.shape[1], device=z.device).expand(B, -1)], dim=1)
        top_s, pos = cand_s.topk(min(k, cand_s.shape[1]), dim=1)
        top_i = cand_i.gather(1, pos)
    return torch.exp(top_s - lse[:, None]), top_i


@torch.no_grad()
def attention_vectors(z: torch.Tensor, keys: torch.Tensor, *, gamma: float) -> torch.Tensor:
    """(B, S) attention rows w_ij = softmax_j(gamma cos(z_i, k_j)) of queries z (B, n) over keys (S, n)."""
    check_positive("gamma", gamma)
    return torch.softmax(gamma * normalize(z) @ normalize(keys).T, dim=1)


@torch.no_grad()
def entry_classes(head) -> tuple[torch.Tensor, torch.Tensor]:
    """(values (S, C), classes (S,)): each entry's label distribution and its argmax class, for a
    MetaNeighborhoodsHead or a classifying (soft-label CE) MetaNeighborhoods layer."""
    values = head.values
    return values, values.argmax(dim=1)


@torch.no_grad()
def inner_step_size(head, z: torch.Tensor) -> torch.Tensor:
    """(B,) relative size of each query's first inner step, ||alpha * grad_i|| / ||W|| (Frobenius norms)."""
    grad, _ = inner_gradient(z, head.keys, head.values, head.weight, head.tau, gamma=head.gamma,
                             backend=head.backend)
    step = head.inner_lr.abs() * grad
    return step.flatten(1).norm(dim=1) / head.weight.norm()


@torch.no_grad()
def target_cosines(head, z: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(before, after), each (B,): cos(z_i, w_{y_i}) of the shared classifier W and cos(z_i, phi_{i,y_i}) of the
    query's fine-tuned one (head.inner_steps steps, never entry dropout: as at test time, in either mode).
    z (B, n) features, target (B,) class indices."""
    C = head.weight.shape[0]
    if target.shape != z.shape[:1]:
        raise ValueError(f"target must have shape ({z.shape[0]},) to match z, got {tuple(target.shape)}")
    if len(target) and not (0 <= int(target.min()) and int(target.max()) < C):
        raise ValueError(f"target must hold class indices in [0, {C}), got values in "
                         f"[{int(target.min())}, {int(target.max())}]")
    zh = normalize(z)
    before = (zh * normalize(head.weight)[target]).sum(1)
    phi = adapted_weights(z, head.keys, head.values, head.weight, head.tau, head.inner_lr.abs(), gamma=head.gamma,
                          inner_steps=head.inner_steps, backend=head.backend)                   # B x C x n
    after = (zh * normalize(phi[torch.arange(len(target), device=z.device), target])).sum(1)
    return before, after
