"""Small pieces both references share: row normalisation, a grad-capable context, the dropout mask."""
from __future__ import annotations

import contextlib

import torch

from ..dropout import keep_mask

EPS = 1e-12


def normalize(x: torch.Tensor) -> torch.Tensor:
    """Row-normalise the last dimension: x / max(||x||, eps)."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(EPS)


def normalize_rows(x: torch.Tensor):
    """Row-wise x / max(||x||, eps) for the hand-written backwards: (xh, 1 / max(||x||, eps), whether the clamp
    is active), all that `normalize_rows_bwd` needs."""
    norm = x.norm(dim=1, keepdim=True)
    return x / norm.clamp_min(EPS), 1.0 / norm.clamp_min(EPS), norm < EPS


def normalize_rows_bwd(xh, rnorm, clamped, dxh):
    """Backward of x / max(||x||, eps): (dxh - xh (xh . dxh)) / ||x||, or dxh / eps where clamped."""
    radial = torch.where(clamped, 0.0, (xh * dxh).sum(1, keepdim=True))
    return (dxh - xh * radial) * rnorm


def entry_keep(B: int, cols: torch.Tensor, entry_dropout: float, seed: int | None, device) -> torch.Tensor | None:
    """Keep-mask (B, len(cols)) for entries `cols`, or None without dropout."""
    if entry_dropout == 0.0:
        return None
    return keep_mask(seed, torch.arange(B, device=device), cols, entry_dropout)


@contextlib.contextmanager
def autograd_enabled():
    """Autograd on, even inside torch.no_grad() or torch.inference_mode() (for the literal reference and
    the torch.func path, which differentiate the inner loss to *compute* their forward)."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def usable(x: torch.Tensor) -> torch.Tensor:
    """x, or a normal-tensor copy of it if it was created in inference mode (autograd refuses those)."""
    return x.clone() if x.is_inference() else x


def attention_weights(scores: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """w (B, S) = softmax_j(scores) over the kept entries; a query with no kept entry gets w = 0."""
    if keep is None:
        return torch.softmax(scores, dim=1)
    # Rows with no kept entry use unmasked scores: finite softmax (no NaN in backward), then zeroed by keep.
    none_kept = ~keep.any(dim=1, keepdim=True)
    return torch.softmax(scores.masked_fill(~keep & ~none_kept, float("-inf")), dim=1) * keep
