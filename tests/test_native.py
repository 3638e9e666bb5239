"""Backend "native" only (mn._C: C++/OpenMP on CPU, CUDA on GPU): thread-count independence, the torch code
around the CUDA kernels run on CPU, the checks before pointers leave Python, the build reporting itself, and
native CUDA against Triton on a GPU. What every fused backend must do is in tests/test_fused.py; the CUDA
kernels' arithmetic on CPU is in tests/test_native_cuda_emulated.py."""
import pytest
import torch

import mn
import mn_kernels.dropout
from mn import native_ops

from helpers import (
    EXACT_FLOAT64,
    NAMES,
    cotangents,
    make_inputs,
    matmul_precision,
    outputs_and_grads,
    scaled_error,
    shape_id,
)

pytestmark = pytest.mark.skipif(mn.available_backends("cpu")["native"] is not None,
                                reason=f"native backend unavailable: {mn.available_backends('cpu')['native']}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_thread_counts_give_bitwise_equal_results(dtype):
    """The work is split by a fixed partition and reduced in a fixed order: 1 and 2 threads give the same bits."""
    inputs = make_inputs(37, 700, 6, 33, dtype=dtype, requires_grad=True, seed=6)
    cot = cotangents(37, 6, 33, dtype=dtype)
    old = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results.append(outputs_and_grads(inputs, "native", cot, gamma=5.0, entry_dropout=0.25, seed=8))
    finally:
        torch.set_num_threads(old)
    for name, a, b in zip(NAMES, *results):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("shape", [(1, 7, 2, 3), (19, 131, 7, 21)], ids=shape_id)
def test_generic_path_equals_literal_reference_float64(shape, monkeypatch):
    """The torch code around the kernels that CUDA runs (on CPU the whole op is mn._C's op_fwd / op_bwd),
    run here on CPU through the CPU contraction kernels."""
    monkeypatch.setattr(native_ops, "_forward_cpu", native_ops._forward_generic)
    monkeypatch.setattr(native_ops, "_backward_cpu", native_ops._backward_generic)
    inputs = make_inputs(*shape, requires_grad=True, seed=2)
    cot = cotangents(shape[0], shape[2], shape[3])
    kw = dict(gamma=5.0, entry_dropout=0.5, seed=123)
    got, ref = outputs_and_grads(inputs, "native", cot, **kw), outputs_and_grads(inputs, "autograd", cot, **kw)
    for name, a, b in zip(NAMES, got, ref):
        torch.testing.assert_close(a, b, **EXACT_FLOAT64, msg=lambda m: f"{name}: {m}")


def test_kernel_arguments_are_checked_before_any_pointer_is_passed():
    prep = native_ops._prepare(*make_inputs(2, 5, 3, 4), 1.0)
    call = lambda **arrays: native_ops._call_kernel("fwd", prep, 0.0, 0, **arrays)  # noqa: E731
    lse, loss = torch.zeros(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    with pytest.raises(ValueError, match="argument U: expected shape"):
        call(lse=lse, U=torch.zeros(2, 3, 5, dtype=torch.float64), loss=loss)
    with pytest.raises(ValueError, match="argument U must be contiguous"):
        call(lse=lse, U=torch.zeros(2, 4, 3, dtype=torch.float64).transpose(1, 2), loss=loss)
    with pytest.raises(ValueError, match=r"argument loss: expected torch.float64"):
        call(lse=lse, U=torch.zeros(2, 3, 4, dtype=torch.float64), loss=loss.float())


def test_missing_extension_reports_itself_unavailable(monkeypatch):
    monkeypatch.setattr(native_ops, "_extension", lambda: ImportError("No module named 'mn._C'"))
    why = mn.available_backends("cpu")["native"]
    assert "mn._C is not built" in why and "No module named" in why
    with pytest.raises(ValueError, match="backend='native' cannot run on cpu"):
        mn.inner_gradient(*make_inputs(2, 3, 2, 2), gamma=1.0, backend="native")


def test_cpu_build_without_cuda_explains_itself():
    if native_ops._extension().has_cuda:
        assert mn.available_backends("cuda")["native"] is None
    else:
        assert "built without CUDA kernels" in mn.available_backends("cuda")["native"]


# ---------------------------------------------------------------- GPU only
def _native_cuda_or_skip():
    why = mn.available_backends("cuda")["native"]
    if why is not None:
        pytest.skip(f"native CUDA kernels unavailable: {why}")


@pytest.mark.gpu
def test_gpu_native_agrees_with_triton():
    """Two independent GPU implementations, float32 with IEEE dots (precision "highest") on both sides."""
    _native_cuda_or_skip()
    if mn.available_backends("cuda")["triton"] is not None:
        pytest.skip("triton unavailable")
    shape = (64, 3000, 37, 96)
    inputs = [t.requires_grad_() for t in make_inputs(*shape, dtype=torch.float32, seed=7, device="cuda")]
    cot = cotangents(shape[0], shape[2], shape[3], dtype=torch.float32, device="cuda")
    with matmul_precision("highest"):
        kw = dict(gamma=5.0, entry_dropout=0.5, seed=11)
        native, triton = outputs_and_grads(inputs, "native", cot, **kw), outputs_and_grads(inputs, "triton", cot, **kw)
    for name, a, b in zip(NAMES, native, triton):
        assert scaled_error(a, b) < 1e-4, f"{name}: {scaled_error(a, b):.2e}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_later_step_thread_counts_give_bitwise_equal_results(dtype):
    """The later step's query groups are a fixed partition reduced in order: 1 and 2 threads give the same bits."""
    g = torch.Generator().manual_seed(3)
    z, keys, values, _, tau = make_inputs(37, 300, 6, 33, dtype=dtype, seed=6)
    phi = torch.randn(37, 6, 33, generator=g, dtype=torch.float64).to(dtype)
    inputs = [t.requires_grad_() for t in (z, keys, values, phi, tau)]
    dgrad, dloss = cotangents(37, 6, 33, dtype=dtype)
    seed = mn_kernels.dropout.seed_mix_tensor(8, "cpu")
    old = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            grad, loss = native_ops.later_step_native(*inputs, gamma=5.0, entry_dropout=0.25, seed=seed)
            results.append([grad, loss, *torch.autograd.grad((grad * dgrad).sum() + (loss * dloss).sum(), inputs)])
    finally:
        torch.set_num_threads(old)
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)
