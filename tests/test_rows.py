"""The Triton row kernels (mn_kernels/rows.py) against the torch form of the same math (mn_kernels/rownorm.py) in
float64: odd sizes, a zero row (the eps clamp), several partials summed, an extra term; a NaN row stays NaN.
On CPU they run in Triton's interpreter."""
import pytest
import torch

from mn_kernels.rownorm import normalize_rows, normalize_rows_bwd

from helpers import EXACT_FLOAT64

pytest.importorskip("triton")
rows = pytest.importorskip("mn_kernels.rows")


def _x(R, n, seed=0):
    x = torch.randn(R, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x[1] = 0.0                                                   # the clamp
    return x


@pytest.mark.parametrize("R, n", [(3, 5), (37, 17)])
def test_normalize_rows_equals_the_torch_form(R, n):
    x = _x(R, n)
    out, rnorm = rows.normalize_rows(x, torch.float64)
    ref, ref_rnorm, _ = normalize_rows(x)
    torch.testing.assert_close(out, ref, **EXACT_FLOAT64)
    torch.testing.assert_close(rnorm, ref_rnorm.view(-1), **EXACT_FLOAT64)


@pytest.mark.parametrize("extra", [False, True])
@pytest.mark.parametrize("R, n, P", [(3, 5, 1), (37, 17, 4)])
def test_rows_bwd_sums_the_partials_and_equals_the_torch_form(R, n, P, extra):
    x = _x(R, n, seed=1)
    g = torch.Generator().manual_seed(2)
    parts = torch.randn(P, R, n, generator=g, dtype=torch.float64)
    more = torch.randn(R, n, generator=g, dtype=torch.float64) if extra else None
    _, rnorm, clamped = normalize_rows(x)
    got = rows.rows_bwd(parts, x, rnorm.view(-1), extra=more)
    ref = normalize_rows_bwd(x, rnorm, clamped, parts.sum(0)) + (more if extra else 0)
    torch.testing.assert_close(got, ref, **EXACT_FLOAT64)


def test_a_nan_row_stays_nan():
    x = _x(4, 6)
    x[2, 3] = float("nan")
    out, rnorm = rows.normalize_rows(x, torch.float64)
    assert torch.isnan(rnorm[2]) and torch.isnan(out[2]).all()
    assert torch.isfinite(out[[0, 1, 3]]).all()
    dx = rows.rows_bwd(torch.ones(1, 4, 6, dtype=torch.float64), x, rnorm)
    assert torch.isnan(dx[2]).all() and torch.isfinite(dx[[0, 1, 3]]).all()
