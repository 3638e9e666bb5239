"""The autograd of an inner-gradient custom-op pair, shared by the fused backends (`triton_ops`, `native_ops`).

Both forward ops have the signature (z, keys, values, weight, tau, gamma, entry_dropout, seed) -> (grad,
inner_loss, lse, a, prepared list); both backward ops take (dgrad, dloss, z, keys, values, weight, tau, grad,
inner_loss, lse, a, prepared, gamma, entry_dropout, seed) -> (dz, dkeys, dvalues, dweight, dtau).
"""
from __future__ import annotations

import torch


def register_inner_gradient_autograd(forward_op, backward_op, backend: str) -> None:
    """Joins `forward_op` to `backward_op` with `register_autograd`: lse, a and the preparation are outputs kept
    for the backward only (non-differentiable, never zero-filled). The backward is first-order: differentiating
    it (a gradient of a gradient) raises an error that names the op and the backends that can."""

    def setup_context(ctx, inputs, output):
        z, keys, values, weight, tau, ctx.gamma, ctx.entry_dropout, ctx.seed = inputs
        grad, inner_loss, lse, a, prepared = output
        ctx.mark_non_differentiable(lse, a, *prepared)
        ctx.set_materialize_grads(False)   # no zero-filled gradients for the outputs kept for backward only
        ctx.save_for_backward(z, keys, values, weight, tau, grad, inner_loss, lse, a, *prepared)

    def backward(ctx, dgrad, dloss, *_):
        z, keys, values, weight, tau, grad, inner_loss, lse, a, *prepared = ctx.saved_tensors
        dgrad = torch.zeros_like(grad) if dgrad is None else dgrad.contiguous()
        dloss = torch.zeros_like(inner_loss) if dloss is None else dloss.contiguous()
        dz, dkeys, dvalues, dweight, dtau = backward_op(dgrad, dloss, z, keys, values, weight, tau, grad, inner_loss,
                                                        lse, a, prepared, ctx.gamma, ctx.entry_dropout, ctx.seed)
        return dz, dkeys, dvalues, dweight, dtau, None, None, None

    forward_op.register_autograd(backward, setup_context=setup_context)

    def double_backward(ctx, *grads):
        raise RuntimeError(
            f"mn.inner_gradient (and adapted_weights / adapted_logits) on backend={backend!r}: the fused backward is "
            "first-order, so a gradient of its gradient (double backward through create_graph=True) is not "
            "available. Use backend='torch' or backend='autograd', whose backwards are differentiable.")

    backward_op.register_autograd(double_backward, setup_context=lambda ctx, inputs, output: None)
    # Autocast: both ops compute in float32 (float64 stays float64), as torch does for softmax and norms; their
    # host code then runs outside autocast, so the kernels get operands of one dtype (docs/design.md, "Dtypes").
    for op in (forward_op, backward_op):
        for device_type in ("cpu", "cuda"):
            torch.library.register_autocast(op, device_type, torch.float32)
