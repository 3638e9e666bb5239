"""Gradients of gradients through `adapted_logits`: exact on the backends whose backward is differentiable
(`autograd`, `torch`), a clear error on the fused ones (first-order backward), never a wrong number."""
import pytest
import torch

import mn

from helpers import make_alpha, make_inputs

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
FUSED = [b for b in ("native", "triton") if mn.available_backends(DEVICE)[b] is None]


def _explicit_logits(z, keys, values, weight, tau, alpha, **kw):
    """The literal form: stepped weights from `adapted_weights` (autograd backend), then tau * cos by hand."""
    phi = mn.adapted_weights(z, keys, values, weight, tau, alpha, backend="autograd", **kw)
    zh = z / z.norm(dim=-1, keepdim=True)
    return tau * (zh[:, None] * (phi / phi.norm(dim=-1, keepdim=True))).sum(-1)


def _grad_of_grad(fn, inputs):
    """d/d(inputs) of ||d sum(fn) / dz||^2, and d sum(fn) / d(inputs) taken with create_graph."""
    first = torch.autograd.grad(fn(*inputs).sum(), inputs, create_graph=True)
    return first, torch.autograd.grad(first[0].pow(2).sum(), inputs, allow_unused=True)


@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("alpha_kind", ["scalar", "feature", "elementwise"])
@pytest.mark.parametrize("backend", ["autograd", "torch"])
def test_second_derivatives_equal_the_literal_form(backend, alpha_kind, steps):
    inputs = make_inputs(3, 11, 4, 5, requires_grad=True, seed=1) + [make_alpha(alpha_kind, 4, 5)]
    kw = dict(gamma=3.0, inner_steps=steps, entry_dropout=0.2, seed=7)
    first, second = _grad_of_grad(lambda *a: mn.adapted_logits(*a, backend=backend, **kw), inputs)
    first_ref, second_ref = _grad_of_grad(lambda *a: _explicit_logits(*a, **kw), inputs)
    names = ["z", "keys", "values", "weight", "tau", "alpha"]
    for order, got, ref in (("first", first, first_ref), ("second", second, second_ref)):
        for name, a, b in zip(names, got, ref, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=lambda m: f"{order}, {name}: {m}")


@pytest.mark.parametrize("backend", ["autograd", "torch"])
def test_gradgradcheck(backend):
    inputs = make_inputs(2, 5, 3, 4, requires_grad=True, seed=2) + [make_alpha("feature", 3, 4)]
    fn = lambda *a: mn.adapted_logits(*a, gamma=3.0, inner_steps=2, backend=backend)  # noqa: E731
    assert torch.autograd.gradgradcheck(fn, inputs)


@pytest.mark.parametrize("backend", FUSED)
def test_fused_backends_refuse_double_backward_by_name(backend):
    inputs = make_inputs(2, 5, 3, 4, requires_grad=True, seed=3, device=DEVICE)
    alpha = torch.tensor(0.3, dtype=torch.float64, device=DEVICE)
    logits = mn.adapted_logits(*inputs, alpha, gamma=3.0, backend=backend)
    gz, = torch.autograd.grad(logits.sum(), inputs[0], create_graph=True)
    with pytest.raises(RuntimeError, match=f"backend='{backend}': the fused backward is first-order.*"
                                           "backend='torch' or backend='autograd'"):
        torch.autograd.grad(gz.pow(2).sum(), inputs[3])
