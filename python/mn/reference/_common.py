"""Small pieces both references share: row normalisation, a grad-capable context, the dropout mask."""
from __future__ import annotations

import contextlib

import torch

from ..dropout import keep_mask

EPS = 1e-12


def normalize(x: torch.Tensor) -> torch.Tensor:
    """Row-normalise the last dimension: x / max(||x||, eps)."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(EPS)


def row_rnorm(x: torch.Tensor, dtype: torch.dtype):
    """(1 / max(||x_r||, eps) as a column (R, 1), whether the clamp is active) in `dtype`, with no R x n copy."""
    norm = torch.linalg.vector_norm(x, dim=1, keepdim=True, dtype=dtype)
    return 1.0 / norm.clamp_min(EPS), norm < EPS


def normalize_rows(x: torch.Tensor):
    """Row-wise x / max(||x||, eps) for the hand-written backwards: (xh, 1 / max(||x||, eps), whether the clamp
    is active), all that `normalize_rows_bwd` needs besides x."""
    rnorm, clamped = row_rnorm(x, x.dtype)
    return x * rnorm, rnorm, clamped


def normalize_rows_bwd(x, rnorm, clamped, dxh, out=None):
    """Backward of xh = x / max(||x||, eps) from the raw rows x: (dxh - xh (xh . dxh)) / ||x||, i.e.
    (dxh - x rnorm^2 (x . dxh)) rnorm, or dxh / eps where clamped. Allocates only its result besides per-row
    numbers, or nothing with `out` (which may be dxh itself): the fused backends' extra-memory budget."""
    coef = torch.where(clamped, 0.0, rnorm * rnorm * torch.einsum("rk,rk->r", x, dxh)[:, None])
    if out is None:
        return torch.addcmul(dxh, x, coef, value=-1).mul_(rnorm)
    return torch.addcmul(dxh, x, coef, value=-1, out=out).mul_(rnorm)


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
