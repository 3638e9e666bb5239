"""torch.autocast: the ops compute in float32 whatever the backend (float64 stays float64), so a head fed
bf16 features from an autocast backbone trains, and gives what it gives on those features in float32."""
import pytest
import torch

import mn

from helpers import make_inputs, matmul_precision, reorder_tol

BACKENDS = ["autograd", "torch", "native", "triton"]


def _head_step(backend, device, autocast: bool):
    """Logits and parameter gradients of a head fed bf16 features (as an autocast backbone gives them)."""
    torch.manual_seed(0)
    head = mn.MetaNeighborhoodsHead(8, 3, num_entries=10, inner_lr="feature", backend=backend).to(device)
    z = torch.randn(4, 8, device=device).bfloat16()
    if autocast:
        with torch.autocast(device, dtype=torch.bfloat16):
            logits = head(z)
    else:
        logits = head(z.float())
    grads = torch.autograd.grad(logits.square().sum(), list(head.parameters()))
    return logits, grads


def _check_against_float32(backend, device):
    if mn.available_backends(device)[backend] is not None:
        pytest.skip(f"{backend}: {mn.available_backends(device)[backend]}")
    logits, grads = _head_step(backend, device, autocast=True)
    ref_logits, ref_grads = _head_step(backend, device, autocast=False)
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, ref_logits, **reorder_tol(torch.float32))
    for g, r in zip(grads, ref_grads, strict=True):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g, r, **reorder_tol(torch.float32))


@pytest.mark.parametrize("backend", BACKENDS)
def test_head_under_cpu_autocast_computes_in_float32(backend):
    _check_against_float32(backend, "cpu")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", BACKENDS)
def test_head_under_cuda_autocast_computes_in_float32(backend):
    with matmul_precision("highest"):
        _check_against_float32(backend, "cuda")


@pytest.mark.parametrize("op", ["triton_inner_gradient_fwd", "native_inner_gradient_fwd"])
def test_custom_ops_upcast_mixed_operands_under_autocast(op):
    """Called directly, the fused forward ops take autocast's mixed operands (bf16 z, float32 dictionary)."""
    backend = op.split("_")[0]
    if mn.available_backends("cpu")[backend] is not None:
        pytest.skip(f"{backend}: {mn.available_backends('cpu')[backend]}")
    g = torch.Generator().manual_seed(0)
    z, keys, weight = torch.randn(3, 5, generator=g), torch.randn(7, 5, generator=g), torch.randn(4, 5, generator=g)
    values, tau = torch.softmax(torch.randn(7, 4, generator=g), 1), torch.tensor(3.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        grad, loss, *_ = getattr(torch.ops.mn, op)(z.bfloat16(), keys, values, weight, tau, 5.0, 0.0, None)
    expected, expected_loss = mn.inner_gradient(z.bfloat16().float(), keys, values, weight, tau, gamma=5.0,
                                                backend="autograd")
    assert grad.dtype == loss.dtype == torch.float32
    torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss, expected_loss, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", ["torch", "native"])
def test_adapted_logits_train_under_autocast(backend):
    """Under CPU autocast (bf16) the step still runs forward and backward: the logits after the step compute in
    their inputs' dtype, as the fused ops before them do."""
    if mn.available_backends("cpu")[backend] is not None:
        pytest.skip(mn.available_backends("cpu")[backend])
    z, keys, values, weight, tau = make_inputs(4, 20, 5, 8, dtype=torch.float32, requires_grad=True)
    for alpha in (torch.tensor(0.1, requires_grad=True), torch.full((8,), 0.1, requires_grad=True)):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = mn.adapted_logits(z, keys, values, weight, tau, alpha, gamma=5.0, backend=backend)
            loss = torch.nn.functional.cross_entropy(logits, torch.arange(4) % 5)
        loss.backward()
        assert logits.dtype == torch.float32
        assert all(torch.isfinite(t.grad).all() for t in (z, keys, values, weight, tau, alpha))


@pytest.mark.parametrize("backend", ["triton", "native"])
def test_backward_inside_autocast_uses_the_forwards_operands(backend):
    """A forward on fp16 tensors outside autocast, its backward inside: the backward must not recast what the
    forward kept (Triton's fp16 dot operands), or it rebuilds the attention from other keys than the forward's
    normaliser saw; it gives the gradients of a backward outside autocast."""
    if mn.available_backends("cpu")[backend] is not None:
        pytest.skip(f"{backend}: {mn.available_backends('cpu')[backend]}")
    grads = []
    for inside in (False, True):
        inputs = [t.half().requires_grad_() for t in make_inputs(3, 40, 5, 16, seed=5)]
        grad, loss = mn.inner_gradient(*inputs, gamma=100.0, backend=backend)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=inside):
            grads.append(torch.autograd.grad(grad.float().square().sum() + loss.float().sum(), inputs))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)   # one path: the backward ignores autocast
