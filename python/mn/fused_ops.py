"""One factory for the custom-op pair of a fused backend (`triton_ops`, `native_ops`): two `torch.library` ops,
`mn::<backend>_inner_gradient_fwd` and `mn::<backend>_inner_gradient_bwd`, their fake kernels, the registered
autograd that joins them, and their autocast policy (docs/design.md, "Architecture").

A backend supplies three functions:

    forward(z, keys, values, weight, tau, gamma, entry_dropout, seed)       seed: with dropout, the seed's part of
                                                                           the hash, a 0-d int64 tensor on z's device
        -> grad (B, C, n), inner_loss (B,), lse (B,), a (B, C), prepared (list of tensors), all in the compute
           dtype (mn_kernels.dtypes): the backward rebuilds D_i and the projection term from grad and inner_loss
    backward(dgrad, dloss, z, keys, values, weight, tau, grad, inner_loss, lse, a, prepared, gamma, entry_dropout,
             seed) -> dz, dkeys, dvalues, dweight, dtau, each in its input's dtype
    fake_prepared(z, keys, values, weight, tau, gamma, entry_dropout, seed) -> prepared, as empty tensors of the
        right shapes (torch ops only), for tracing

Because the ops have fake kernels and a registered autograd, `torch.compile` keeps them in its graph as opaque
calls. lse, a and the preparation are outputs kept for the backward only (non-differentiable, never
zero-filled). The backward is first-order: differentiating it raises an error naming the backends that can.
Under autocast the forward computes in float32 (float64 stays float64), like the functional layer; the backward
runs outside autocast on exactly what the forward kept.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from mn_kernels.dtypes import compute_dtype

from .grad_mode import without_autocast


def register_fused_op(backend: str, forward: Callable, backward: Callable, fake_prepared: Callable,
                      op: str = "inner_gradient") -> Callable:
    """Registers the op pair `mn::<backend>_<op>_fwd/_bwd`; returns its entry point
    `fn(z, keys, values, weight, tau, *, gamma, entry_dropout=0.0, seed=None) -> (grad (B, C, n), inner_loss (B,))`
    in z's dtype, differentiable through the hand-written backward. op: "inner_gradient" (step 1, a shared
    weight (C, n)) or "later_step" (steps 2..T, per-example weights (B, C, n)); both have the same signature."""
    fwd_name, bwd_name = f"mn::{backend}_{op}_fwd", f"mn::{backend}_{op}_bwd"

    @torch.library.custom_op(fwd_name, mutates_args=())
    def fwd_op(z: Tensor, keys: Tensor, values: Tensor, weight: Tensor, tau: Tensor, gamma: float,
               entry_dropout: float, seed: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor, list[Tensor]]:
        return forward(z, keys, values, weight, tau, gamma, entry_dropout, seed)

    @fwd_op.register_fake
    def _(z, keys, values, weight, tau, gamma, entry_dropout, seed):
        (B, n), C, ct = z.shape, values.shape[1], compute_dtype(z.dtype)
        prepared = fake_prepared(z, keys, values, weight, tau, gamma, entry_dropout, seed)
        return (z.new_empty(B, C, n, dtype=ct), z.new_empty(B, dtype=ct), z.new_empty(B, dtype=ct),
                z.new_empty(B, C, dtype=ct), prepared)

    @torch.library.custom_op(bwd_name, mutates_args=())
    def bwd_op(dgrad: Tensor, dloss: Tensor, z: Tensor, keys: Tensor, values: Tensor, weight: Tensor, tau: Tensor,
               grad: Tensor, inner_loss: Tensor, lse: Tensor, a: Tensor, prepared: list[Tensor], gamma: float,
               entry_dropout: float, seed: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        # Outside autocast, uncast: the backward must see the forward's own operands (a cast of the saved dot
        # operands would rebuild the attention from other keys than the forward's lse normalised).
        with without_autocast(z.device):
            return backward(dgrad, dloss, z, keys, values, weight, tau, grad, inner_loss, lse, a, prepared, gamma,
                            entry_dropout, seed)

    @bwd_op.register_fake
    def _(dgrad, dloss, z, keys, values, weight, tau, grad, inner_loss, lse, a, prepared, gamma, entry_dropout, seed):
        return tuple(torch.empty_like(t) for t in (z, keys, values, weight, tau))

    def setup_context(ctx, inputs, output):
        z, keys, values, weight, tau, ctx.gamma, ctx.entry_dropout, seed = inputs
        grad, inner_loss, lse, a, prepared = output
        ctx.mark_non_differentiable(lse, a, *prepared)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(z, keys, values, weight, tau, seed, grad, inner_loss, lse, a, *prepared)

    def fwd_backward(ctx, dgrad, dloss, *_):
        z, keys, values, weight, tau, seed, grad, inner_loss, lse, a, *prepared = ctx.saved_tensors
        dgrad = torch.zeros_like(grad) if dgrad is None else dgrad.contiguous()
        dloss = torch.zeros_like(inner_loss) if dloss is None else dloss.contiguous()
        grads = bwd_op(dgrad, dloss, z, keys, values, weight, tau, grad, inner_loss, lse, a, prepared, ctx.gamma,
                       ctx.entry_dropout, seed)
        return *grads, None, None, None

    def bwd_backward(ctx, *grads):
        raise RuntimeError(
            f"mn.inner_gradient (and adapted_weights / adapted_logits) on backend={backend!r}: the fused backward is "
            "first-order, so a gradient of its gradient (double backward through create_graph=True) is not "
            "available. Use backend='torch' or backend='autograd', whose backwards are differentiable.")

    fwd_op.register_autograd(fwd_backward, setup_context=setup_context)
    bwd_op.register_autograd(bwd_backward, setup_context=lambda ctx, inputs, output: None)
    for device_type in ("cpu", "cuda"):
        torch.library.register_autocast(fwd_op, device_type, torch.float32)

    def inner_gradient(z, keys, values, weight, tau, *, gamma, entry_dropout=0.0, seed=None):
        grad, loss, *_ = fwd_op(z.contiguous(), keys.contiguous(), values.contiguous(), weight.contiguous(),
                                tau.reshape(()), float(gamma), float(entry_dropout), seed)
        return grad.to(z.dtype), loss.to(z.dtype)

    inner_gradient.__name__ = inner_gradient.__qualname__ = f"{op}_{backend}"
    inner_gradient.__doc__ = (f"The {backend!r} backend's entry point: (grad (B, C, n), inner_loss (B,)) in z's "
                              "dtype, differentiable through the hand-written backward.")
    return inner_gradient
