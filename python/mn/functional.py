"""Functional API: `inner_gradient`, `adapted_weights`, `adapted_logits` (docs/design.md, "Public API").
Checks arguments, then dispatches."""
from __future__ import annotations

import functools

import torch
from torch import Tensor

from mn_kernels import dropout

from ._validate import check_dropout, check_inner_inputs, check_positive
from .backends import BACKENDS, get_backend
from .step_logits import cosine_logits_after_step


def _float32_under_autocast(op):
    """Runs `op` outside autocast with its floating tensor arguments in float32 (float64 ones unchanged) when
    autocast is on for z's device: the ops' autocast policy, float32 like torch's softmax and norm, whatever
    the backend (the custom ops register the same)."""
    @functools.wraps(op)
    def wrapper(z, *args, **kwargs):
        device_type = z.device.type if isinstance(z, torch.Tensor) else None
        if device_type not in ("cpu", "cuda") or not torch.is_autocast_enabled(device_type):
            return op(z, *args, **kwargs)

        def cast(x):
            return x.float() if isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype != torch.float64 \
                else x
        with torch.autocast(device_type, enabled=False):
            return op(cast(z), *map(cast, args), **{k: cast(v) for k, v in kwargs.items()})
    return wrapper


def _as_tau(tau, like: torch.Tensor):
    return tau if isinstance(tau, torch.Tensor) else torch.tensor(float(tau), dtype=like.dtype, device=like.device)


def draw_seed(entry_dropout: float, seed, device) -> Tensor | None:
    """The seed's part of the dropout hash as a 0-d int64 tensor on `device` (None without dropout), the form
    the backends take. With no seed, a fresh one from torch's generator of `device`, drawn there: no host read,
    so a step stays free of synchronisations and a CUDA graph replays with a new draw; torch.manual_seed
    replays it."""
    if entry_dropout == 0:
        return None
    if seed is None:
        seed = torch.randint(0, 2**31, (), device=device)
    return dropout.seed_mix_tensor(seed, device)


@_float32_under_autocast
def inner_gradient(z: Tensor, keys: Tensor, values: Tensor, weight: Tensor, tau: Tensor | float, *, gamma: float,
                   entry_dropout: float = 0.0, seed: int | Tensor | None = None,
                   backend: str = "auto") -> tuple[Tensor, Tensor]:
    """Per-example gradient of the attention-weighted inner loss w.r.t. a cosine classifier's weight.

    For each query z_i: attention w_ij = softmax_j(gamma * cos(z_i, k_j)) over the S entries (each entry
    dropped for query i with probability `entry_dropout`, by a seeded hash: docs/design.md, "Entry dropout"),
    inner loss L_i = sum_j w_ij CE(softmax(tau * cos(k_j, W)), v_j), and grad_i = dL_i/dW.

    z (B, n), keys (S, n), values (S, C) probabilities, weight (C, n), tau: scalar tensor (or number).
    Returns grad (B, C, n) and inner_loss (B,), differentiable w.r.t. every tensor input.
    seed: the dropout mask's seed, an int, or a one-integer tensor for a seed that lives on the device, as a CUDA
    graph needs (either taken modulo 2**32); None draws one from torch's generator of z's device, on the device.
    backend: "auto", "torch", "autograd", or any registered (`mn.available_backends()`).
    Under torch.autocast the op computes in float32 (float64 operands stay float64): it is a softmax and a
    cross-entropy as much as a matmul. Outside autocast it computes in its operands' dtype.
    """
    tau = _as_tau(tau, z)
    check_inner_inputs(z, keys, values, weight, tau, gamma)
    check_dropout(entry_dropout, seed)
    impl = get_backend(backend, z.device, z.shape[1], z.dtype)
    return impl.inner_gradient(z, keys, values, weight, tau, gamma=float(gamma),
                               entry_dropout=float(entry_dropout), seed=draw_seed(entry_dropout, seed, z.device))


def _last_step(z, keys, values, weight, tau, alpha, *, gamma, inner_steps, entry_dropout, seed, backend):
    """(phi_{T-1}, grad_T): the weights before the last inner step -- weight (C, n) itself when T = 1, else
    per-example (B, C, n) -- and the last step's gradient (B, C, n). Checks every argument."""
    tau = _as_tau(tau, z)
    check_inner_inputs(z, keys, values, weight, tau, gamma, alpha=alpha)
    check_dropout(entry_dropout, seed)
    check_positive("inner_steps", inner_steps, integer=True)
    first = get_backend(backend, z.device, z.shape[1], z.dtype)
    fused_later = first.later_step is not None and first.later_rejects(z.device, z.shape[1], z.dtype) is None
    later = first.later_step if fused_later else BACKENDS["torch"].later_step
    options = dict(gamma=float(gamma), entry_dropout=float(entry_dropout),
                   seed=draw_seed(entry_dropout, seed, z.device))
    phi = weight
    for step in range(inner_steps):
        grad, _ = (first.inner_gradient if step == 0 else later)(z, keys, values, phi, tau, **options)
        if step < inner_steps - 1:
            phi = phi - alpha * grad                              # alpha broadcasts over (B, C, n)
    return phi, grad


@_float32_under_autocast
def adapted_weights(z: Tensor, keys: Tensor, values: Tensor, weight: Tensor, tau: Tensor | float, alpha: Tensor, *,
                    gamma: float, inner_steps: int = 1, entry_dropout: float = 0.0, seed: int | Tensor | None = None,
                    backend: str = "auto") -> Tensor:
    """Per-example fine-tuned classifier weights phi (B, C, n) (paper Eq. 8; Algorithm 1-2).

    phi_i = W - alpha * inner_gradient(...)_i, repeated `inner_steps` times with the same attention weights
    (and dropout mask) and per-example weights from step 2 on.
    z (B, n), keys (S, n), values (S, C), weight (C, n), tau scalar, alpha: scalar, (n,) or (C, n).

    Step 1 runs on `backend`. Steps 2..T take per-example weights (B, C, n), whose per-entry logits depend
    on the query: `triton` and `native` (CPU) run them on fused later-step kernels, any other backend on the
    closed-form `torch` reference (docs/design.md, "Later inner steps"). Measured on 2 CPU cores at
    (B, S, C, n) = (64, 2000, 20, 64): a training step with inner_steps=3 on `native` takes 5.3x one with
    inner_steps=1 (bench/results/cpu-later-steps.md); on a GPU not yet measured.
    """
    phi, grad = _last_step(z, keys, values, weight, tau, alpha, gamma=gamma, inner_steps=inner_steps,
                           entry_dropout=entry_dropout, seed=seed, backend=backend)
    return phi - alpha * grad


@_float32_under_autocast
def adapted_logits(z: Tensor, keys: Tensor, values: Tensor, weight: Tensor, tau: Tensor | float, alpha: Tensor, *,
                   gamma: float, inner_steps: int = 1, entry_dropout: float = 0.0, seed: int | Tensor | None = None,
                   backend: str = "auto") -> Tensor:
    """Logits of the per-example fine-tuned cosine classifier (paper Eq. 15): logits_ic = tau * cos(z_i, phi_i,c)
    with phi = `adapted_weights(...)` (same arguments; its docstring says where steps 2..T run), computed by
    `cosine_logits_after_step` from the last step's gradient without materialising phi. Returns (B, C)."""
    tau = _as_tau(tau, z)
    phi, grad = _last_step(z, keys, values, weight, tau, alpha, gamma=gamma, inner_steps=inner_steps,
                           entry_dropout=entry_dropout, seed=seed, backend=backend)
    return cosine_logits_after_step(z, phi, grad, alpha, tau)
