"""Backend "triton" (the fused kernels behind torch.library custom ops): gradcheck and agreement with the
paper-literal reference through the public API, dtype tolerance tables, torch.compile without graph breaks,
and the GPU checks (marked `gpu`). On CPU the kernels run in Triton's interpreter (tests/conftest.py)."""
import pytest
import torch

import mn
from mn.backends import AUTO_ORDER

from conftest import NAMES, cotangents, make_inputs, outputs_and_grads, scaled_error, shape_id

pytestmark = pytest.mark.skipif(mn.available_backends("cuda" if torch.cuda.is_available() else "cpu")["triton"]
                                is not None, reason="triton backend unavailable")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# B = 1; S = 1 and S below a tile; S not a multiple of any tile; C = 2; n = 3; n above 16 and odd
ODD_SHAPES = [(1, 1, 2, 3), (1, 7, 2, 3), (3, 70, 5, 3), (2, 13, 3, 17), (5, 37, 7, 19)]


@pytest.mark.parametrize("shape,fast", [((1, 1, 2, 3), False), ((1, 7, 2, 3), False), ((3, 70, 5, 3), True),
                                        ((2, 13, 3, 17), True)], ids=lambda v: shape_id(v) if isinstance(v, tuple) else
                         ("fast" if v else "full"))
def test_gradcheck_float64(shape, fast):
    """Numerical vs analytical Jacobian of the fused Function; fast mode (random projections of the Jacobian,
    a few evaluations instead of one per input element) for the shapes the interpreter is slow on."""
    inputs = make_inputs(*shape, requires_grad=True, device=DEVICE)
    fn = lambda *a: mn.inner_gradient(*a, gamma=3.0, entry_dropout=0.3, seed=2, backend="triton")  # noqa: E731
    assert torch.autograd.gradcheck(fn, inputs, fast_mode=fast)


@pytest.mark.parametrize("dropout", [0.0, 0.5], ids=["nodrop", "drop0.5"])
@pytest.mark.parametrize("shape", ODD_SHAPES, ids=shape_id)
def test_equals_literal_reference_float64(shape, dropout):
    """Forward and every input gradient against backend="autograd" at 1e-10 (both exact; rounding only)."""
    inputs = make_inputs(*shape, requires_grad=True, seed=2, device=DEVICE)
    cot = cotangents(shape[0], shape[2], shape[3], device=DEVICE)
    kw = dict(gamma=5.0, entry_dropout=dropout, seed=123)
    got, ref = outputs_and_grads(inputs, "triton", cot, **kw), outputs_and_grads(inputs, "autograd", cot, **kw)
    for name, a, b in zip(NAMES, got, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=lambda m: f"{name}: {m}")


def test_large_gamma_and_all_dropped_queries_float64():
    """gamma = 60 (beyond the fixed-shift range) and dropout 0.9 on 3 entries: some queries see no entry."""
    inputs = make_inputs(6, 3, 3, 4, requires_grad=True, seed=3, device=DEVICE)
    cot = cotangents(6, 3, 4, device=DEVICE)
    kw = dict(gamma=60.0, entry_dropout=0.9, seed=4)
    got, ref = outputs_and_grads(inputs, "triton", cot, **kw), outputs_and_grads(inputs, "autograd", cot, **kw)
    assert (ref[1] == 0).any()
    for name, a, b in zip(NAMES, got, ref):
        assert torch.isfinite(a).all(), name
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=lambda m: f"{name}: {m}")


# Tolerances against the float64 reference, per input dtype (inputs rounded to the dtype first):
# fp32 with IEEE dots differs by accumulation order only; tf32 dots keep 10 mantissa bits (~5e-4 relative per
# product, summed over S entries with softmax weights); bf16 operands keep 8 bits.
TOLERANCES = {
    ("float32", "highest"): dict(rtol=1e-4, atol=1e-5),
    ("float32", "high"): dict(rtol=2e-2, atol=2e-3),
    ("bfloat16", "highest"): dict(rtol=5e-2, atol=2e-2),
}


@pytest.mark.parametrize("dtype,precision", list(TOLERANCES), ids=lambda v: str(v))
def test_low_precision_against_float64(dtype, precision):
    if DEVICE == "cpu" and precision != "highest":
        pytest.skip("tf32 exists on the GPU only (the interpreter computes fp32 dots in IEEE)")
    shape = (8, 300, 10, 32) if DEVICE == "cuda" else (3, 40, 5, 16)
    low = [t.to(getattr(torch, dtype)).requires_grad_() for t in make_inputs(*shape, seed=5, device=DEVICE)]
    exact = [t.detach().double().requires_grad_() for t in low]
    cot = cotangents(shape[0], shape[2], shape[3], device=DEVICE)
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        got = outputs_and_grads(low, "triton", [c.to(low[0].dtype) for c in cot], gamma=5.0)
    finally:
        torch.set_float32_matmul_precision(old)
    ref = outputs_and_grads(exact, "autograd", cot, gamma=5.0)
    tol = TOLERANCES[(dtype, precision)]["rtol"]
    for name, a, b in zip(NAMES, got, ref):
        assert a.dtype == low[0].dtype, name
        assert scaled_error(a, b) < tol, f"{name}: {scaled_error(a, b):.2e} >= {tol}"


def test_module_function_and_functional_agree():
    torch.manual_seed(0)
    head = mn.MetaNeighborhoodsHead(5, 3, num_entries=17, backend="triton", inner_lr="feature").double().to(DEVICE)
    z = torch.randn(4, 5, dtype=torch.float64, device=DEVICE)
    via_module = head(z)
    via_functional = mn.adapted_logits(z, head.keys, head.values, head.weight, head.tau, head.inner_lr.abs(),
                                       gamma=head.gamma, backend="triton")
    grad, *_ = torch.ops.mn.triton_inner_gradient_fwd(z, head.keys, head.values, head.weight, head.tau, head.gamma, 0.0, 0)
    phi = head.weight - head.inner_lr.abs() * grad
    via_op = head.tau * torch.nn.functional.cosine_similarity(z[:, None], phi, dim=-1)
    reference = mn.adapted_logits(z, head.keys, head.values, head.weight, head.tau, head.inner_lr.abs(),
                                  gamma=head.gamma, backend="autograd")
    for got in (via_module, via_functional, via_op):
        torch.testing.assert_close(got, reference, rtol=1e-10, atol=1e-10)


def test_custom_ops_pass_opcheck():
    """Schema, fake kernels and autograd registration are consistent (torch.library.opcheck)."""
    z, keys, values, weight, tau = make_inputs(2, 9, 3, 4, requires_grad=True, device=DEVICE)
    torch.library.opcheck(torch.ops.mn.triton_inner_gradient_fwd.default, (z, keys, values, weight, tau, 2.0, 0.5, 7),
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))


def test_torch_compile_has_no_graph_break():
    inputs = make_inputs(3, 11, 4, 5, requires_grad=True, seed=6, device=DEVICE)
    alpha = torch.tensor(0.1, dtype=torch.float64, device=DEVICE)

    def step(z, keys, values, weight, tau):
        logits = mn.adapted_logits(z, keys, values, weight, tau, alpha, gamma=5.0, entry_dropout=0.5, seed=3,
                                   backend="triton")
        return torch.nn.functional.cross_entropy(logits, torch.arange(3, device=logits.device) % 4)

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")   # fullgraph: a graph break raises
    loss = compiled(*inputs)
    grads = torch.autograd.grad(loss, inputs)
    eager_loss = step(*inputs)
    torch.testing.assert_close(loss, eager_loss, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads, torch.autograd.grad(eager_loss, inputs)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- GPU only
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_reruns_are_bitwise_equal(dtype):
    """Deterministic kernels: ten reruns give identical bits (a race or an atomic would show)."""
    inputs = [t.to(dtype).requires_grad_() for t in make_inputs(64, 5000, 37, 96, device="cuda", seed=7)]
    cot = [c.to(dtype) for c in cotangents(64, 37, 96, device=DEVICE)]
    first = outputs_and_grads(inputs, "triton", cot, gamma=5.0, entry_dropout=0.5, seed=1)
    for _ in range(10):
        again = outputs_and_grads(inputs, "triton", cot, gamma=5.0, entry_dropout=0.5, seed=1)
        for name, a, b in zip(NAMES, again, first):
            assert torch.equal(a, b), name


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
