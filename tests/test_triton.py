"""Backend "triton" only: the feature limit of its kernels (and `auto` stepping around it) and the S = 1e6 GPU run.
What every fused backend must do is in tests/test_fused.py, dtype tables in tests/test_precision.py."""
import pytest
import torch

import mn
from mn.backends import AUTO_ORDER

from helpers import make_inputs, scaled_error

pytestmark = pytest.mark.skipif(mn.available_backends("cuda" if torch.cuda.is_available() else "cpu")["triton"]
                                is not None, reason="triton backend unavailable")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.gpu
def test_gpu_million_entries():
    """S = 1e6: the fused path's extra memory stays a small multiple of the dictionary's own size S·(C+n), far
    below any B x S x C, S x C x n or B x S x n tensor (each 16-26 GB here), and the forward agrees with the
    chunked closed-form reference in float64."""
    B, S, C, n = 64, 1_000_000, 100, 64
    inputs = [t.requires_grad_() for t in make_inputs(B, S, C, n, dtype=torch.float32, device="cuda", seed=8)]
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    grad, loss = mn.inner_gradient(*inputs, gamma=5.0, backend="triton")
    (grad.sum() + loss.sum()).backward()
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    dictionary = 4 * S * (C + n)
    assert extra < 8 * dictionary, f"extra memory {extra / 2**20:.0f} MiB = {extra / dictionary:.1f} x S(C+n) floats"
    with torch.no_grad():
        ref_grad, ref_loss = mn.inner_gradient(*[t.double() for t in inputs], gamma=5.0, backend="torch")
    assert scaled_error(grad.detach(), ref_grad) < 2e-2 and scaled_error(loss.detach(), ref_loss) < 2e-2
    assert all(torch.isfinite(t.grad).all() for t in inputs)


@pytest.mark.parametrize("dtype,n", [(torch.float32, 1025), (torch.float64, 513)])
def test_feature_count_beyond_the_kernels_is_refused_clearly(dtype, n):
    with pytest.raises(ValueError, match=rf"backend='triton' cannot take z with n = {n} features \(the Triton "
                                         rf"kernels take n <= {n - 1} with {dtype} inputs\)"):
        mn.inner_gradient(*make_inputs(2, 3, 2, n, dtype=dtype, device=DEVICE), gamma=1.0, backend="triton")


def test_auto_takes_the_next_backend_beyond_the_kernels_feature_limit(monkeypatch):
    monkeypatch.setitem(AUTO_ORDER, DEVICE, ("triton", "torch"))
    assert mn.resolve_backend("auto", DEVICE, n=1024) == "triton"
    assert mn.resolve_backend("auto", DEVICE, n=1025) == "torch"
    assert mn.resolve_backend("auto", DEVICE, n=513, dtype=torch.float64) == "torch"
