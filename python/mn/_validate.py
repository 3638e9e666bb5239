"""Argument checks shared by every public op (docs/design.md, "Bad input"): each failure names the argument
and what was expected, so nothing reaches a kernel malformed and nothing is silently wrong."""
from __future__ import annotations

import math
import numbers

import torch

_FLOAT_DTYPES = (torch.float64, torch.float32, torch.bfloat16, torch.float16)
_VALUE_CHECKS = True


def set_value_checks(enabled: bool) -> bool:
    """Turns the value checks of every op (finite entries, no zero-norm row, values on the simplex) on or
    off; returns the previous setting. On by default. They read data back, one device synchronisation per
    call: on a GPU that stalls the host until the queued work is done, so a training loop that has
    validated its inputs may turn them off for speed. Shape, dtype and device checks always run."""
    global _VALUE_CHECKS
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool, got {type(enabled).__name__}")
    previous, _VALUE_CHECKS = _VALUE_CHECKS, enabled
    return previous


def _tensor(name: str, x) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name} must be a floating tensor (float64/float32/bfloat16/float16), got {x.dtype}")
    return x


def _check_values(named: dict[str, torch.Tensor]) -> None:
    """Finite entries; no zero-norm row in z, keys, weight; values rows on the probability simplex.

    The conditions are reduced on the tensors' device and read back with a single synchronisation (each
    check a sync of its own would cost more than the fused op on a GPU); the message is built only on failure.
    """
    x = {name: t.detach() for name, t in named.items()}
    # (message maker, flag): the maker runs only for the failing check (the zero-row one looks up the row).
    bad = [(lambda name=name: f"{name} contains NaN or Inf", ~torch.isfinite(t).all()) for name, t in x.items()]
    for name in ("z", "keys", "weight"):
        if name in x:
            zero = x[name].float().norm(dim=-1) == 0
            bad.append((lambda name=name, zero=zero: f"{name} has a zero-norm row (first at row "
                        f"{int(zero.nonzero()[0, 0])}): cosine similarity is undefined there", zero.any()))
    if "values" in x:
        v = x["values"].float()
        off_simplex = (v < 0).any() | ((v.sum(1) - 1).abs() > 1e-2).any()
        bad.append((lambda: "values must hold probabilities (non-negative rows summing to 1); "
                    "apply softmax to value logits first", off_simplex))
    flags = torch.stack([flag for _, flag in bad]).tolist()
    for (message, _), flag in zip(bad, flags):
        if flag:
            raise ValueError(message())


def check_positive(name: str, value, *, integer: bool = False) -> None:
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value) or value <= 0:
        what = "a positive integer" if integer else "a finite number > 0"
        raise ValueError(f"{name} must be {what}, got {value!r}")


def check_dropout(entry_dropout, seed) -> None:
    if isinstance(entry_dropout, bool) or not isinstance(entry_dropout, numbers.Real) \
            or not 0.0 <= entry_dropout < 1.0:
        raise ValueError(f"entry_dropout must be a number in [0, 1), got {entry_dropout!r}")
    if isinstance(seed, torch.Tensor):
        if seed.numel() != 1 or seed.is_floating_point() or seed.is_complex() or seed.dtype == torch.bool:
            raise ValueError(f"seed as a tensor must hold one integer (its value is taken modulo 2**32), got "
                             f"{seed.dtype} of shape {tuple(seed.shape)}")
    elif seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)
                               or not 0 <= seed < 2**63):
        raise ValueError(f"seed must be None, an integer in [0, 2**63) or a one-integer tensor, got {seed!r}")


def check_inner_inputs(z, keys, values, weight, tau, gamma, *, alpha=None):
    """Checks the operands of `inner_gradient`, and the inner rate `alpha` if given; returns (B, S, C, n).

    z (B, n), keys (S, n), values (S, C) row-probabilities, weight (C, n), tau a one-element tensor; one
    floating dtype and one device for all; alpha a scalar, (n,) or (C, n) tensor. The value checks of all of
    them share one synchronisation (none on the meta device, which holds no values).
    """
    named = {"z": z, "keys": keys, "values": values, "weight": weight, "tau": tau}
    for name, x in named.items():
        _tensor(name, x)
    for name, x in named.items():
        if x.dtype != z.dtype:
            raise TypeError(f"{name} has dtype {x.dtype} but z has {z.dtype}: all operands must share one dtype")
        if x.device != z.device:
            raise ValueError(f"{name} is on {x.device} but z is on {z.device}: all operands must share one device")
    if z.dim() != 2:
        raise ValueError(f"z must have shape (B, n), got {tuple(z.shape)}")
    B, n = z.shape
    if B < 1 or n < 1:
        raise ValueError(f"z must have B >= 1 rows and n >= 1 features, got {tuple(z.shape)}")
    if keys.dim() != 2 or keys.shape[1] != n:
        raise ValueError(f"keys must have shape (S, n={n}), got {tuple(keys.shape)}")
    S = keys.shape[0]
    if S < 1:
        raise ValueError("keys is empty (S = 0): the dictionary needs at least one entry")
    # The classifier's weight sets C; values must then have one column per class.
    if weight.dim() != 2 or weight.shape[1] != n:
        raise ValueError(f"weight must have shape (C, n={n}), got {tuple(weight.shape)}")
    C = weight.shape[0]
    if C < 2:
        raise ValueError(f"weight must have C >= 2 rows (classes), got C = {C}")
    if values.dim() != 2 or values.shape != (S, C):
        raise ValueError(f"values must have shape (S={S}, C={C}): one row per key, one column per row of weight; "
                         f"got {tuple(values.shape)}")
    if tau.numel() != 1:
        raise ValueError(f"tau must be a scalar (one-element) tensor, got shape {tuple(tau.shape)}")
    if isinstance(gamma, torch.Tensor):
        raise TypeError("gamma must be a Python number (a fixed hyperparameter, not differentiable), got a tensor; "
                        "pass float(gamma)")
    check_positive("gamma", gamma)
    if gamma > torch.finfo(z.dtype).max:
        raise ValueError(f"gamma = {gamma!r} overflows the inputs' dtype {z.dtype} (largest finite value "
                         f"{torch.finfo(z.dtype).max:g}): use float32 inputs or a smaller gamma")
    if alpha is not None:
        _check_alpha_shape(alpha, C, n, z)
        named["alpha"] = alpha
    # Value checks read data: a graph break, so compiled code skips them; meta tensors hold none.
    if _VALUE_CHECKS and not torch.compiler.is_compiling() and z.device.type != "meta":
        _check_values(named)
    return B, S, C, n


def _check_alpha_shape(alpha, C: int, n: int, like: torch.Tensor) -> None:
    _tensor("alpha", alpha)
    if alpha.dtype != like.dtype or alpha.device != like.device:
        raise TypeError(f"alpha must match z's dtype and device ({like.dtype}, {like.device}), "
                        f"got ({alpha.dtype}, {alpha.device})")
    if tuple(alpha.shape) not in {(), (1,), (n,), (C, n)}:
        raise ValueError(f"alpha must be a scalar, shape (n,) = ({n},) or (C, n) = ({C}, {n}), "
                         f"got {tuple(alpha.shape)}")
