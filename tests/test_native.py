"""Backend "native" (mn._C: C++/OpenMP on CPU, CUDA on GPU): gradcheck and agreement with the paper-literal
reference in float64, float32 tolerances, entry dropout, thread-count independence, the custom-op plumbing,
and the GPU checks (marked `gpu`: native CUDA vs the float64 reference, vs Triton, bitwise reruns)."""
import pytest
import torch

import mn
from mn import native_ops

from conftest import NAMES, cotangents, make_inputs, outputs_and_grads, scaled_error, shape_id

pytestmark = pytest.mark.skipif(mn.available_backends("cpu")["native"] is not None,
                                reason=f"native backend unavailable: {mn.available_backends('cpu')['native']}")
# B = 1; S = 1 and S below a tile (64); C = 2; n = 3; S, B, n not multiples of any block (entry tile 64,
# query blocks up to 16, vector widths 4-16) and more than one of each.
ODD_SHAPES = [(1, 1, 2, 3), (1, 7, 2, 3), (3, 70, 5, 3), (2, 13, 3, 17), (19, 131, 7, 21), (5, 200, 2, 70)]


@pytest.mark.parametrize("shape", [(1, 1, 2, 3), (1, 7, 2, 3), (3, 70, 5, 3), (2, 13, 3, 17)], ids=shape_id)
def test_gradcheck_float64(shape):
    inputs = make_inputs(*shape, requires_grad=True)
    fn = lambda *a: mn.inner_gradient(*a, gamma=3.0, entry_dropout=0.3, seed=2, backend="native")  # noqa: E731
    assert torch.autograd.gradcheck(fn, inputs)


@pytest.mark.parametrize("dropout", [0.0, 0.5], ids=["nodrop", "drop0.5"])
@pytest.mark.parametrize("shape", ODD_SHAPES, ids=shape_id)
def test_equals_literal_reference_float64(shape, dropout):
    """Forward and every input gradient against backend="autograd" at 1e-10 (both exact; rounding only).
    With dropout this also checks that the kernels draw the reference's mask (mn.dropout)."""
    inputs = make_inputs(*shape, requires_grad=True, seed=2)
    cot = cotangents(shape[0], shape[2], shape[3])
    kw = dict(gamma=5.0, entry_dropout=dropout, seed=123)
    got, ref = outputs_and_grads(inputs, "native", cot, **kw), outputs_and_grads(inputs, "autograd", cot, **kw)
    for name, a, b in zip(NAMES, got, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=lambda m: f"{name}: {m}")


def test_values_off_the_simplex_float64():
    """delta carries sigma_j = sum_c v_jc, so the op is the exact derivative for any values (the public API
    only admits probabilities; the op itself does not care)."""
    z, keys, values, weight, tau = make_inputs(4, 90, 3, 5, seed=9)
    values = (values * torch.linspace(0.5, 2.0, 90, dtype=torch.float64)[:, None]).requires_grad_()
    inputs = [z.requires_grad_(), keys.requires_grad_(), values, weight.requires_grad_(), tau.requires_grad_()]
    fn = lambda *a: native_ops.inner_gradient_native(*a, gamma=2.0)  # noqa: E731
    assert torch.autograd.gradcheck(fn, inputs)


def test_large_gamma_and_all_dropped_queries_float64():
    """gamma = 60 (beyond any fixed shift) and dropout 0.9 on 3 entries: some queries see no entry."""
    inputs = make_inputs(6, 3, 3, 4, requires_grad=True, seed=3)
    cot = cotangents(6, 3, 4)
    kw = dict(gamma=60.0, entry_dropout=0.9, seed=4)
    got, ref = outputs_and_grads(inputs, "native", cot, **kw), outputs_and_grads(inputs, "autograd", cot, **kw)
    assert (ref[1] == 0).any()
    for name, a, b in zip(NAMES, got, ref):
        assert torch.isfinite(a).all(), name
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=lambda m: f"{name}: {m}")


# float32 kernels accumulate in float32: the error is rounding of O(S) softmax-weighted sums and of the
# per-entry softmax, ~1e-6 relative here; 1e-4 leaves headroom for other shapes and instruction sets.
# bfloat16 inputs are rounded to 8 mantissa bits before the float32 computation: ~1e-2.
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 5e-2)], ids=["float32", "bfloat16"])
def test_low_precision_against_float64(dtype, tol):
    shape = (20, 300, 10, 32)
    low = [t.to(dtype).requires_grad_() for t in make_inputs(*shape, seed=5)]
    exact = [t.detach().double().requires_grad_() for t in low]
    cot = cotangents(shape[0], shape[2], shape[3])
    got = outputs_and_grads(low, "native", [c.to(dtype) for c in cot], gamma=5.0, entry_dropout=0.5, seed=3)
    ref = outputs_and_grads(exact, "autograd", cot, gamma=5.0, entry_dropout=0.5, seed=3)
    for name, a, b in zip(NAMES, got, ref):
        assert a.dtype == dtype, name
        assert scaled_error(a, b) < tol, f"{name}: {scaled_error(a, b):.2e} >= {tol}"


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
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=lambda m: f"{name}: {m}")


def test_custom_ops_pass_opcheck():
    """Schema, fake kernels and autograd registration are consistent (torch.library.opcheck)."""
    z, keys, values, weight, tau = make_inputs(2, 9, 3, 4, requires_grad=True)
    torch.library.opcheck(torch.ops.mn.native_inner_gradient_fwd.default, (z, keys, values, weight, tau, 2.0, 0.5, 7),
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))


def test_torch_compile_has_no_graph_break():
    inputs = make_inputs(3, 11, 4, 5, requires_grad=True, seed=6)
    alpha = torch.tensor(0.1, dtype=torch.float64)

    def step(z, keys, values, weight, tau):
        logits = mn.adapted_logits(z, keys, values, weight, tau, alpha, gamma=5.0, entry_dropout=0.5, seed=3,
                                   backend="native")
        return torch.nn.functional.cross_entropy(logits, torch.arange(3) % 4)

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")   # fullgraph: a graph break raises
    loss = compiled(*inputs)
    eager_loss = step(*inputs)
    torch.testing.assert_close(loss, eager_loss, rtol=1e-12, atol=1e-12)
    for a, b in zip(torch.autograd.grad(loss, inputs), torch.autograd.grad(eager_loss, inputs)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


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
@pytest.mark.parametrize("dropout", [0.0, 0.5], ids=["nodrop", "drop0.5"])
@pytest.mark.parametrize("shape", ODD_SHAPES + [(40, 1000, 37, 130)], ids=shape_id)
def test_gpu_float64_equals_literal_reference(shape, dropout):
    _native_cuda_or_skip()
    inputs = make_inputs(*shape, requires_grad=True, seed=2, device="cuda")
    cot = cotangents(shape[0], shape[2], shape[3], device="cuda")
    kw = dict(gamma=5.0, entry_dropout=dropout, seed=123)
    got, ref = outputs_and_grads(inputs, "native", cot, **kw), outputs_and_grads(inputs, "autograd", cot, **kw)
    for name, a, b in zip(NAMES, got, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=lambda m: f"{name}: {m}")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 5e-2)], ids=["float32", "bfloat16"])
def test_gpu_low_precision_against_float64(dtype, tol):
    _native_cuda_or_skip()
    shape = (64, 3000, 37, 96)
    low = [t.to(dtype).requires_grad_() for t in make_inputs(*shape, seed=5, device="cuda")]
    exact = [t.detach().double().requires_grad_() for t in low]
    cot = cotangents(shape[0], shape[2], shape[3], device="cuda")
    got = outputs_and_grads(low, "native", [c.to(dtype) for c in cot], gamma=5.0, entry_dropout=0.5, seed=3)
    ref = outputs_and_grads(exact, "torch", cot, gamma=5.0, entry_dropout=0.5, seed=3)
    for name, a, b in zip(NAMES, got, ref):
        assert a.dtype == dtype, name
        assert scaled_error(a, b) < tol, f"{name}: {scaled_error(a, b):.2e} >= {tol}"


@pytest.mark.gpu
def test_gpu_native_agrees_with_triton():
    """Two independent GPU implementations, float32 with IEEE dots (precision "highest") on both sides."""
    _native_cuda_or_skip()
    if mn.available_backends("cuda")["triton"] is not None:
        pytest.skip("triton unavailable")
    shape = (64, 3000, 37, 96)
    inputs = [t.requires_grad_() for t in make_inputs(*shape, dtype=torch.float32, seed=7, device="cuda")]
    cot = cotangents(shape[0], shape[2], shape[3], dtype=torch.float32, device="cuda")
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        kw = dict(gamma=5.0, entry_dropout=0.5, seed=11)
        native, triton = outputs_and_grads(inputs, "native", cot, **kw), outputs_and_grads(inputs, "triton", cot, **kw)
    finally:
        torch.set_float32_matmul_precision(old)
    for name, a, b in zip(NAMES, native, triton):
        assert scaled_error(a, b) < 1e-4, f"{name}: {scaled_error(a, b):.2e}"


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_gpu_reruns_are_bitwise_equal(dtype):
    """No atomics, every output owned by one thread: five reruns give identical bits."""
    _native_cuda_or_skip()
    inputs = [t.requires_grad_() for t in make_inputs(64, 5000, 37, 96, dtype=dtype, device="cuda", seed=7)]
    cot = cotangents(64, 37, 96, dtype=dtype, device="cuda")
    first = outputs_and_grads(inputs, "native", cot, gamma=5.0, entry_dropout=0.5, seed=1)
    for _ in range(5):
        again = outputs_and_grads(inputs, "native", cot, gamma=5.0, entry_dropout=0.5, seed=1)
        for name, a, b in zip(NAMES, again, first):
            assert torch.equal(a, b), name
