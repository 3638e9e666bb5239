"""The two pure-PyTorch references of inner_gradient / adapted_logits against each other, and gradcheck."""
import pytest
import torch

import mn
from mn.reference import closed_form, inner_gradient_autograd, inner_gradient_torch

from helpers import EXACT_FLOAT64, cotangents, make_alpha, make_inputs, outputs_and_grads, reorder_tol, shape_id

ODD_SHAPES = [(1, 1, 2, 3), (1, 5, 2, 1), (3, 7, 2, 3), (4, 13, 5, 6), (2, 9, 3, 4)]
MID_SHAPES = [(5, 37, 7, 19), (1, 23, 2, 3), (6, 50, 11, 8)]
TOL = EXACT_FLOAT64


def _outputs_and_grads(fn, inputs, cotangents, **kw):
    grad, loss = fn(*inputs, **kw)
    wrt = [t for t in inputs if t.requires_grad]
    dins = torch.autograd.grad((grad * cotangents[0]).sum() + (loss * cotangents[1]).sum(), wrt)
    return (grad, loss) + dins


@pytest.mark.parametrize("fn", [inner_gradient_autograd, inner_gradient_torch], ids=["autograd", "torch"])
@pytest.mark.parametrize("shape", ODD_SHAPES, ids=shape_id)
def test_gradcheck(fn, shape):
    inputs = make_inputs(*shape, requires_grad=True)
    kw = dict(gamma=2.5) if fn is inner_gradient_autograd else dict(gamma=2.5, chunk_size=2)
    assert torch.autograd.gradcheck(lambda *a: fn(*a, **kw), inputs)


@pytest.mark.parametrize("dropout", [0.0, 0.5], ids=["nodrop", "drop0.5"])
@pytest.mark.parametrize("shape", MID_SHAPES, ids=shape_id)
def test_closed_form_equals_literal(shape, dropout):
    inputs = make_inputs(*shape, requires_grad=True, seed=1)
    B, S, C, n = shape
    g = torch.Generator().manual_seed(2)
    cot = (torch.randn(B, C, n, generator=g, dtype=torch.float64), torch.randn(B, generator=g, dtype=torch.float64))
    kw = dict(gamma=5.0, entry_dropout=dropout, seed=7)
    ref = _outputs_and_grads(inner_gradient_autograd, inputs, cot, **kw)
    for chunk in (None, 4):                     # one chunk, and chunks that do not divide S
        got = _outputs_and_grads(inner_gradient_torch, inputs, cot, chunk_size=chunk, **kw)
        for name, a, b in zip(["grad", "loss", "dz", "dkeys", "dvalues", "dweight", "dtau"], got, ref):
            torch.testing.assert_close(a, b, **TOL, msg=lambda m: f"{name} (chunk {chunk}): {m}")


@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("alpha_kind", ["scalar", "feature", "elementwise"])
def test_adapted_logits_backends_agree(alpha_kind, steps):
    B, S, C, n = 4, 19, 5, 7
    inputs = make_inputs(B, S, C, n, requires_grad=True, seed=4)
    alpha = make_alpha(alpha_kind, C, n)
    r = torch.randn(B, C, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    results = []
    for backend in ("autograd", "torch"):
        logits = mn.adapted_logits(*inputs, alpha, gamma=5.0, inner_steps=steps, entry_dropout=0.3, seed=11,
                                   backend=backend)
        results.append((logits,) + torch.autograd.grad((logits * r).sum(), inputs + [alpha]))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("steps", [1, 3])
def test_adapted_logits_gradcheck(steps):
    inputs = make_inputs(2, 6, 3, 4, requires_grad=True, seed=6)
    alpha = make_alpha("feature", 3, 4)
    fn = lambda *a: mn.adapted_logits(*a, gamma=3.0, inner_steps=steps, backend="torch")  # noqa: E731
    assert torch.autograd.gradcheck(fn, inputs + [alpha])


def test_adapted_logits_step_by_hand():
    """One step equals W - alpha * grad, scored by tau * cos: checks adapted_logits against inner_gradient."""
    z, keys, values, weight, tau = make_inputs(3, 10, 4, 5, seed=8)
    alpha = torch.tensor(0.3, dtype=torch.float64)
    grad, _ = mn.inner_gradient(z, keys, values, weight, tau, gamma=4.0, backend="autograd")
    phi = weight - alpha * grad
    expected = tau * torch.nn.functional.cosine_similarity(z[:, None, :], phi, dim=-1)
    torch.testing.assert_close(mn.adapted_logits(z, keys, values, weight, tau, alpha, gamma=4.0), expected, **TOL)


@pytest.mark.parametrize("backend", ["autograd", "torch"])
@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_eval_modes_equal_grad_mode(backend, mode):
    inputs = make_inputs(3, 11, 4, 5, requires_grad=True, seed=9)
    alpha = torch.tensor(0.2, dtype=torch.float64)
    kw = dict(gamma=5.0, inner_steps=2, entry_dropout=0.25, seed=3, backend=backend)
    expected = mn.adapted_logits(*inputs, alpha, **kw)
    expected_grad = mn.inner_gradient(*inputs, gamma=5.0, backend=backend)
    ctx = torch.no_grad() if mode == "no_grad" else torch.inference_mode()
    with ctx:
        got = mn.adapted_logits(*inputs, alpha, **kw)
        got_grad = mn.inner_gradient(*inputs, gamma=5.0, backend=backend)
    assert not got.requires_grad and not got_grad[0].requires_grad
    # Grad mode checkpoints the chunks and no-grad mode does not: two paths, so a reordering tolerance.
    torch.testing.assert_close(got, expected.detach(), **reorder_tol(got.dtype))
    for a, b in zip(got_grad, expected_grad):
        torch.testing.assert_close(a, b.detach(), **reorder_tol(a.dtype))


@pytest.fixture
def memory_budget():
    """Sets the torch backend's memory budget for one test (restored after)."""
    previous = []
    yield lambda nbytes: previous.append(closed_form.set_memory_budget(nbytes))
    if previous:
        closed_form.set_memory_budget(previous[0])


def test_torch_reference_runs_cifar100_config_within_its_budget(monkeypatch, memory_budget):
    """B=128, S=10000, C=100, n=256 forward + backward on CPU in float32 under a 64 MiB budget: S x C x n (1 GiB)
    does not fit, so every chunk's intermediate (chunk x C x n) stays within half the budget, and the chunks are
    checkpointed (recomputed in the backward instead of kept)."""
    memory_budget(64 << 20)
    B, S, C, n = 128, 10000, 100, 256
    z, keys, values, weight, tau = make_inputs(B, S, C, n, dtype=torch.float32, requires_grad=True)
    chunk_elements, checkpointed = [], []
    real_chunk_sums, real_checkpoint = closed_form._chunk_sums, closed_form.checkpoint

    def spy(zh, kh, *rest):
        chunk_elements.append(kh.shape[0] * C * n)
        return real_chunk_sums(zh, kh, *rest)

    def spy_checkpoint(fn, *args, **kw):
        checkpointed.append(True)
        return real_checkpoint(fn, *args, **kw)

    monkeypatch.setattr(closed_form, "_chunk_sums", spy)
    monkeypatch.setattr(closed_form, "checkpoint", spy_checkpoint)
    grad, loss = inner_gradient_torch(z, keys, values, weight, tau, gamma=5.0)
    (grad.square().sum() + loss.sum()).backward()
    assert grad.shape == (B, C, n) and torch.isfinite(grad).all() and torch.isfinite(keys.grad).all()
    assert len(checkpointed) == len(chunk_elements) // 2 > 1      # each chunk runs twice: forward, recomputation
    assert 4 * max(chunk_elements) <= 64 << 19


def test_torch_reference_takes_the_dictionary_at_once_when_it_fits(monkeypatch, memory_budget):
    """Within the budget the whole dictionary is one softmax and one GEMM with nothing recomputed (the plain closed
    form); past it, chunks and checkpoints. Both agree with the literal reference."""
    inputs = make_inputs(4, 30, 5, 6, requires_grad=True, seed=4)
    calls = []
    monkeypatch.setattr(closed_form, "checkpoint", lambda *a, **kw: calls.append(1) or a[0](*a[1:]))
    ref = outputs_and_grads(inputs, "autograd", cotangents(4, 5, 6), gamma=3.0, entry_dropout=0.3, seed=1)
    for budget, recomputed in ((1 << 30, False), (8 * 30 * 5 * 6 - 1, True)):
        memory_budget(budget)
        calls.clear()
        got = outputs_and_grads(inputs, "torch", cotangents(4, 5, 6), gamma=3.0, entry_dropout=0.3, seed=1)
        assert bool(calls) == recomputed
        for a, b in zip(got, ref, strict=True):
            torch.testing.assert_close(a, b, **EXACT_FLOAT64)


def test_memory_budget_is_checked():
    with pytest.raises(ValueError, match="nbytes must be a positive integer"):
        mn.set_torch_memory_budget(0)


@pytest.mark.parametrize("wanted", [(0, 1, 2), (0,), (1, 2), (2,)], ids=["all", "e", "delta-kh", "kh"])
def test_closed_form_contraction_backward(wanted):
    """The torch backend's one-GEMM contraction U = e @ (delta (x) kh) with its hand-written backward: gradcheck
    for any subset of inputs, and gradgradcheck (its create_graph path)."""
    g = torch.Generator().manual_seed(16)
    inputs = [torch.rand(3, 7, generator=g, dtype=torch.float64), torch.randn(7, 4, generator=g, dtype=torch.float64),
              torch.randn(7, 5, generator=g, dtype=torch.float64)]
    inputs = [t.requires_grad_(k in wanted) for k, t in enumerate(inputs)]
    assert torch.autograd.gradcheck(closed_form._Contraction.apply, inputs)
    assert torch.autograd.gradgradcheck(closed_form._Contraction.apply, inputs)


def test_torch_memory_plan_counts_the_batch_times_entries_arrays():
    """At B = 2048, S = 20000, C = 4, n = 16 (float32) the contraction's S x C x n is 5 MiB but the B x S scores,
    weights, mask and hash temporaries are over 1 GiB: a 64 MiB budget must chunk and checkpoint."""
    previous = closed_form.set_memory_budget(64 << 20)
    try:
        chunk, checkpointed = closed_form._plan(2048, 20000, 4, 16, per_example=False, itemsize=4, chunk_size=None)
    finally:
        closed_form.set_memory_budget(previous)
    assert checkpointed and chunk * 2048 * (3 * 4 + 25) <= 32 << 20
