"""Row normalisation xh = x / max(||x||, eps) and its backward, as the fused ops' host code needs them: from the
raw rows, with no normalised copy kept for the backward (docs/design.md, "Backward", step 4)."""
import torch

EPS = 1e-12


def normalize(x: torch.Tensor) -> torch.Tensor:
    """Row-normalise the last dimension: x / max(||x||, eps), differentiable by autograd."""
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
