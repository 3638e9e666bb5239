"""The fused backends (`triton`, `native`), one test per property, parametrised by backend: gradcheck and agreement
with the paper-literal reference in float64 on odd shapes, the Module / functional / custom-op forms agreeing,
torch.library registration, torch.compile without graph breaks, and the GPU checks (marked `gpu`).
On CPU `triton` runs in Triton's interpreter (tests/conftest.py) and `native` is mn._C's C++ kernels.
Backend-only plumbing is in tests/test_triton.py and tests/test_native.py; dtype tables in test_precision.py."""
import pytest
import torch

import mn
from mn_kernels.dropout import seed_mix_tensor

from helpers import EXACT_FLOAT64, NAMES, cotangents, make_inputs, outputs_and_grads, shape_id

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BACKENDS = [pytest.param(b, marks=pytest.mark.skipif(mn.available_backends(DEVICE)[b] is not None,
                                                     reason=f"{b} unavailable: {mn.available_backends(DEVICE)[b]}"))
            for b in ("triton", "native")]
# B = 1; S = 1 and S below a tile; S, B, n not multiples of any block (entry tiles 16-64, query blocks up to
# 16, vector widths 4-16) and more than one of each; C = 2; n = 3; C past a class chunk (16 in the interpreter).
ODD_SHAPES = [(1, 1, 2, 3), (1, 7, 2, 3), (3, 70, 5, 3), (2, 13, 3, 17), (5, 37, 7, 19), (3, 40, 37, 5)]


def _agree_with_literal(backend, inputs, cot, **kw):
    got, ref = outputs_and_grads(inputs, backend, cot, **kw), outputs_and_grads(inputs, "autograd", cot, **kw)
    for name, a, b in zip(NAMES, got, ref, strict=True):
        assert torch.isfinite(a).all(), name
        torch.testing.assert_close(a, b, **EXACT_FLOAT64, msg=lambda m: f"{name}: {m}")
    return ref


@pytest.mark.parametrize("shape", [(1, 1, 2, 3), (1, 7, 2, 3), (3, 70, 5, 3), (2, 13, 3, 17)], ids=shape_id)
@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_float64(backend, shape):
    """Numerical vs analytical Jacobian of the fused op; fast mode (random projections of the Jacobian) for the
    larger shapes, which the interpreter is slow on."""
    inputs = make_inputs(*shape, requires_grad=True, device=DEVICE)
    fn = lambda *a: mn.inner_gradient(*a, gamma=3.0, entry_dropout=0.3, seed=2, backend=backend)  # noqa: E731
    assert torch.autograd.gradcheck(fn, inputs, fast_mode=shape[1] > 10)


@pytest.mark.parametrize("dropout", [0.0, 0.5], ids=["nodrop", "drop0.5"])
@pytest.mark.parametrize("shape", ODD_SHAPES, ids=shape_id)
@pytest.mark.parametrize("backend", BACKENDS)
def test_equals_literal_reference_float64(backend, shape, dropout):
    """Forward and every input gradient against backend="autograd" (both exact; rounding only). With dropout this
    also checks that the kernels draw the reference's mask (mn_kernels.dropout)."""
    inputs = make_inputs(*shape, requires_grad=True, seed=2, device=DEVICE)
    _agree_with_literal(backend, inputs, cotangents(shape[0], shape[2], shape[3], device=DEVICE), gamma=5.0,
                        entry_dropout=dropout, seed=123)


@pytest.mark.parametrize("backend", BACKENDS)
def test_large_gamma_and_all_dropped_queries_float64(backend):
    """gamma = 60 (beyond any fixed shift) and dropout 0.9 on 3 entries: some queries see no entry."""
    inputs = make_inputs(6, 3, 3, 4, requires_grad=True, seed=3, device=DEVICE)
    ref = _agree_with_literal(backend, inputs, cotangents(6, 3, 4, device=DEVICE), gamma=60.0, entry_dropout=0.9,
                              seed=4)
    assert (ref[1] == 0).any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_values_off_the_simplex_float64(backend):
    """delta carries sigma_j = sum_c v_jc, so the op is the exact derivative for any values (the public API
    only admits probabilities; the op itself does not care)."""
    z, keys, values, weight, tau = make_inputs(4, 30, 3, 5, seed=9, device=DEVICE)
    values = (values * torch.linspace(0.5, 2.0, 30, dtype=torch.float64, device=DEVICE)[:, None]).requires_grad_()
    inputs = [z.requires_grad_(), keys.requires_grad_(), values, weight.requires_grad_(), tau.requires_grad_()]
    op = getattr(mn, f"{backend}_ops")
    fn = lambda *a: getattr(op, f"inner_gradient_{backend}")(*a, gamma=2.0)  # noqa: E731
    assert torch.autograd.gradcheck(fn, inputs, fast_mode=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_module_function_and_functional_agree(backend):
    """The head, adapted_logits and the custom op (stepped by hand) give the literal reference's logits."""
    torch.manual_seed(0)
    head = mn.MetaNeighborhoodsHead(5, 3, num_entries=17, backend=backend, inner_lr="feature").double().to(DEVICE)
    z = torch.randn(4, 5, dtype=torch.float64, device=DEVICE)
    alpha = head.inner_lr.abs()
    via_module = head(z)
    via_functional = mn.adapted_logits(z, head.keys, head.values, head.weight, head.tau, alpha, gamma=head.gamma,
                                       backend=backend)
    op = getattr(torch.ops.mn, f"{backend}_inner_gradient_fwd")
    grad, *_ = op(z, head.keys, head.values, head.weight, head.tau, head.gamma, 0.0, None)
    via_op = head.tau * torch.nn.functional.cosine_similarity(z[:, None], head.weight - alpha * grad, dim=-1)
    reference = mn.adapted_logits(z, head.keys, head.values, head.weight, head.tau, alpha, gamma=head.gamma,
                                  backend="autograd")
    for got in (via_module, via_functional, via_op):
        torch.testing.assert_close(got, reference, **EXACT_FLOAT64)


@pytest.mark.parametrize("backend", BACKENDS)
def test_custom_ops_pass_opcheck(backend):
    """Schema, fake kernels and autograd registration are consistent (torch.library.opcheck)."""
    z, keys, values, weight, tau = make_inputs(2, 9, 3, 4, requires_grad=True, device=DEVICE)
    op = getattr(torch.ops.mn, f"{backend}_inner_gradient_fwd")
    seed = seed_mix_tensor(7, DEVICE)
    torch.library.opcheck(op.default, (z, keys, values, weight, tau, 2.0, 0.5, seed),
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_torch_compile_has_no_graph_break(backend):
    inputs = make_inputs(3, 11, 4, 5, requires_grad=True, seed=6, device=DEVICE)
    alpha = torch.tensor(0.1, dtype=torch.float64, device=DEVICE)

    def step(z, keys, values, weight, tau):
        logits = mn.adapted_logits(z, keys, values, weight, tau, alpha, gamma=5.0, entry_dropout=0.5, seed=3,
                                   backend=backend)
        return torch.nn.functional.cross_entropy(logits, torch.arange(3, device=logits.device) % 4)

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")   # fullgraph: a graph break raises
    loss = compiled(*inputs)
    grads = torch.autograd.grad(loss, inputs)
    eager_loss = step(*inputs)
    # The compiled graph runs the same ops in the same order: equal up to rounding of a re-association.
    torch.testing.assert_close(loss, eager_loss, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads, torch.autograd.grad(eager_loss, inputs), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- GPU only
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
def test_gpu_reruns_are_bitwise_equal(backend, dtype):
    """Deterministic kernels, no atomics: reruns give identical bits (a race or an atomic would show)."""
    inputs = [t.to(dtype).requires_grad_() for t in make_inputs(64, 5000, 37, 96, device="cuda", seed=7)]
    cot = [c.to(dtype) for c in cotangents(64, 37, 96, device="cuda")]
    first = outputs_and_grads(inputs, backend, cot, gamma=5.0, entry_dropout=0.5, seed=1)
    for _ in range(5):
        again = outputs_and_grads(inputs, backend, cot, gamma=5.0, entry_dropout=0.5, seed=1)
        for name, a, b in zip(NAMES, again, first, strict=True):
            assert torch.equal(a, b), name


@pytest.mark.gpu
@pytest.mark.parametrize("dropout", [0.0, 0.5], ids=["nodrop", "drop0.5"])
@pytest.mark.parametrize("shape", ODD_SHAPES + [(40, 1000, 37, 130)], ids=shape_id)
@pytest.mark.parametrize("backend", BACKENDS)
def test_gpu_float64_equals_literal_reference(backend, shape, dropout):
    inputs = make_inputs(*shape, requires_grad=True, seed=2, device="cuda")
    _agree_with_literal(backend, inputs, cotangents(shape[0], shape[2], shape[3], device="cuda"), gamma=5.0,
                        entry_dropout=dropout, seed=123)
