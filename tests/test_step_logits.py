"""The logits after the inner step, tau cos(z, phi - alpha grad), by contractions over n with a hand-written
backward (mn/step_logits.py): equal to the explicit stepped weights, gradcheck for any subset of inputs, and the
memory they promise (no stepped weights saved, one gradient array in the backward)."""
import pytest
import torch

from mn.step_logits import cosine_logits_after_step

from helpers import make_alpha, make_inputs


@pytest.mark.parametrize("per_example", [False, True], ids=["shared-phi", "per-example-phi"])
@pytest.mark.parametrize("alpha_kind", ["scalar", "feature", "elementwise"])
def test_cosine_logits_after_step_equal_the_stepped_weights(alpha_kind, per_example):
    """The closed form (contractions over n) against tau * cos(z, phi - alpha grad) built explicitly, values
    and every input gradient, float64."""
    B, C, n = 4, 5, 7
    g = torch.Generator().manual_seed(12)
    z = torch.randn(B, n, dtype=torch.float64, generator=g, requires_grad=True)
    phi = torch.randn(*((B,) if per_example else ()), C, n, dtype=torch.float64, generator=g, requires_grad=True)
    grad = torch.randn(B, C, n, dtype=torch.float64, generator=g, requires_grad=True)
    tau = torch.tensor(7.0, dtype=torch.float64, requires_grad=True)
    alpha = make_alpha(alpha_kind, C, n)
    inputs = [z, phi, grad, alpha, tau]
    r = torch.randn(B, C, dtype=torch.float64, generator=g)
    got = cosine_logits_after_step(*inputs)
    expected = tau * torch.nn.functional.cosine_similarity(z[:, None, :], phi - alpha * grad, dim=-1)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    for a, b in zip(torch.autograd.grad((got * r).sum(), inputs), torch.autograd.grad((expected * r).sum(), inputs)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("alpha_kind, most", [("scalar", 1), ("feature", 2)])
def test_cosine_logits_after_step_keep_no_stepped_weights(alpha_kind, most):
    """Memory: for its backward, the closed form keeps the gradient (and alpha * gradient for a vector alpha)
    -- not the stepped weights, their norms and their normalised copy, each B x C x n, as the explicit form."""
    B, C, n = 3, 4, 5
    z, _, _, weight, tau = make_inputs(B, 6, C, n, requires_grad=True, seed=13)
    grad = torch.randn(B, C, n, dtype=torch.float64, requires_grad=True)
    alpha = make_alpha(alpha_kind, C, n)

    def big_saved(fn):
        storages = set()

        def pack(t):
            if t.dim() == 3 and t.numel() == B * C * n:
                storages.add(t.untyped_storage().data_ptr())
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn()
        return len(storages)

    closed = big_saved(lambda: cosine_logits_after_step(z, weight, grad, alpha, tau))
    explicit = big_saved(lambda: tau * torch.nn.functional.cosine_similarity(z[:, None], weight - alpha * grad, dim=-1))
    assert 1 <= closed <= most < explicit


@pytest.mark.parametrize("per_example", [False, True], ids=["shared-phi", "per-example-phi"])
@pytest.mark.parametrize("alpha_kind, most", [("scalar", 1), ("feature", 2), ("elementwise", 2)])
def test_cosine_logits_after_step_backward_allocates_one_gradient_array(alpha_kind, most, per_example):
    """Memory: the hand-written backward builds the gradient for grad (and, per-example, the one for phi) in
    one B x C x n array each (a vector alpha adds the product it sums for dalpha); autograd through the
    contractions added up three."""
    from torch.utils._python_dispatch import TorchDispatchMode
    B, C, n = 3, 4, 5
    g = torch.Generator().manual_seed(14)
    z = torch.randn(B, n, dtype=torch.float64, generator=g, requires_grad=True)
    phi = torch.randn(*((B,) if per_example else ()), C, n, dtype=torch.float64, generator=g, requires_grad=True)
    grad = torch.randn(B, C, n, dtype=torch.float64, generator=g, requires_grad=True)
    alpha, tau = make_alpha(alpha_kind, C, n).requires_grad_(), torch.tensor(7.0, dtype=torch.float64)
    logits = cosine_logits_after_step(z, phi, grad, alpha, tau)

    class NewArrays(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            inputs = {a.untyped_storage().data_ptr() for a in args if isinstance(a, torch.Tensor)}
            for t in (out if isinstance(out, (tuple, list)) else (out,)):
                if isinstance(t, torch.Tensor) and t.numel() == B * C * n \
                        and t.untyped_storage().data_ptr() not in inputs and t._base is None:
                    self.count += 1
            return out

    with NewArrays() as arrays:
        logits.sum().backward()
    assert arrays.count <= most + per_example


@pytest.mark.parametrize("per_example", [False, True], ids=["shared-phi", "per-example-phi"])
@pytest.mark.parametrize("alpha_kind", ["scalar", "feature", "elementwise"])
@pytest.mark.parametrize("wanted", [(0, 1, 2, 3, 4), (3,), (4,), (0, 2)], ids=["all", "alpha", "tau", "z-grad"])
def test_cosine_logits_after_step_gradcheck(alpha_kind, per_example, wanted):
    """float64 gradcheck of the hand-written backward, for any subset of inputs that require grad."""
    B, C, n = 3, 4, 5
    g = torch.Generator().manual_seed(15)
    inputs = [torch.randn(B, n, dtype=torch.float64, generator=g),
              torch.randn(*((B,) if per_example else ()), C, n, dtype=torch.float64, generator=g),
              torch.randn(B, C, n, dtype=torch.float64, generator=g),
              make_alpha(alpha_kind, C, n), torch.tensor(7.0, dtype=torch.float64)]
    inputs = [t.requires_grad_(k in wanted) for k, t in enumerate(inputs)]
    assert torch.autograd.gradcheck(cosine_logits_after_step, inputs)
