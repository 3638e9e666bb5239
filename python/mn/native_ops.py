"""Backend "native": the C++/OpenMP and CUDA kernels of `mn._C` (csrc/) as a PyTorch op with a hand-written backward.

Layers, as for Triton (triton_ops.py): `mn._C` (kernels; raw pointers, sizes and a stream in, nothing of torch)
<- this file (argument checks before any pointer leaves Python, two `torch.library` custom ops
`mn::native_inner_gradient_fwd` / `_bwd` with fake kernels, joined by `register_autograd`)
<- `mn.inner_gradient(backend="native")` <- the layers.

Split of the work (DESIGN §4): the kernels do the O(B·S·C·n) contractions -- the forward `U_ic = sum_j w_ij
delta_jc kh_j` with its log-sum-exp, and the backward `ddelta`, `dkh`, `dce`, `dzh` with `X = dU . kh^T`
recomputed tile by tile. Around them: normalisation, the per-entry softmax / cross-entropy and their backward,
and the projection `P_c`. On CPU all of that runs in mn._C too (`op_fwd` / `op_bwd`, one call per direction:
as a few dozen small torch calls it took about as long as the kernels at C = 10); on CUDA it is the torch code
here (`_prepare`, `_backward_generic`) around the CUDA kernels. `delta_jc = tau (sigma_j p_jc - v_jc)`,
sigma_j = sum_c v_jc (the exact derivative of the cross-entropy also off the simplex), as in every backend.

Compute dtype: float64 for float64 inputs, else float32 (bf16 / fp16 inputs are computed in float32 and the
results cast back). The forward also returns, for the backward only (non-differentiable), `a_ic = wh_c . U_ic`
(B x C), the component the projection removes, and the per-call preparation, which the backward reuses instead
of recomputing: on CPU one workspace tensor (layout in csrc/cpu/workspace.h), on CUDA the fields of `_Prepared`.
CPU kernels use `torch.get_num_threads()` threads; results do not depend on the thread count. The op takes the
shared weight (C, n) only; inner steps 2..T run on the `torch` reference.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
from typing import NamedTuple

import torch
from torch import Tensor

from ._op_autograd import register_inner_gradient_autograd
from .dropout import drop_threshold
from .reference._common import normalize_rows, normalize_rows_bwd

try:
    _EXTENSION = importlib.import_module("._C", __package__)
except ImportError as error:   # not built: pure-Python install (setup.py), reported by unavailable()
    _EXTENSION = error


def _extension():
    """The compiled module mn._C, or the ImportError explaining why there is none."""
    return _EXTENSION


def unavailable(device: torch.device) -> str | None:
    """Why the native backend cannot run on `device`, or None if it can."""
    ext = _extension()
    if isinstance(ext, ImportError):
        return (f"the extension mn._C is not built ({ext}); reinstall with a C++ compiler and CMake available "
                "(pip install -e .; MN_BUILD_NATIVE=1 turns a failed build into an error)")
    if device.type == "cpu":
        return None
    if device.type == "cuda":
        return None if ext.has_cuda else ("mn._C was built without CUDA kernels (no CUDA compiler at build time; "
                                          "MN_BUILD_CUDA=1 makes that a build error)")
    return f"no native kernels for device type {device.type!r} (cpu and cuda only)"


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _dropout_args(entry_dropout: float, seed: int) -> tuple[int, int]:
    """The kernels' dropout constants (csrc/api.h, Dropout): seed * 0x9E3779B1 mod 2^32 and the threshold."""
    return (int(seed) * 0x9E3779B1) & 0xFFFFFFFF, drop_threshold(entry_dropout)


def _kernel_args(named: dict[str, Tensor], dtype: torch.dtype, device: torch.device, shapes: dict) -> list[int]:
    """Data pointers of the arrays handed to mn._C, after checking what the kernels assume of them: the
    compute dtype, one device, the expected shape, contiguous row-major storage."""
    for name, t in named.items():
        if t.dtype != dtype or t.device != device:
            raise ValueError(f"native kernel argument {name}: expected {dtype} on {device}, got {t.dtype} on {t.device}")
        if tuple(t.shape) != shapes[name]:
            raise ValueError(f"native kernel argument {name}: expected shape {shapes[name]}, got {tuple(t.shape)}")
        if not t.is_contiguous():
            raise ValueError(f"native kernel argument {name} must be contiguous")
    return [t.data_ptr() for t in named.values()]


class _Prepared(NamedTuple):
    """The per-call preparation, computed once by the forward op (`_prepare`) and handed to the backward op as
    extra, non-differentiable outputs of the forward: O(B n + S (C + n) + C n) memory, compute dtype."""
    zh: Tensor          # (B, n) z / max(||z||, eps)   with 1 / max(||z||, eps) and the clamp flag, (B, 1) each
    z_rnorm: Tensor
    z_clamped: Tensor
    kh: Tensor          # (S, n), likewise for the keys
    k_rnorm: Tensor
    k_clamped: Tensor
    wh: Tensor          # (C, n), likewise for the shared weight
    w_rnorm: Tensor
    w_clamped: Tensor
    cos: Tensor         # (S, C) kh_j . wh_c
    logp: Tensor        # (S, C) log_softmax(tau cos_j)
    p: Tensor           # (S, C)
    sigma: Tensor       # (S, 1) sum_c v_jc
    resid: Tensor       # (S, C) sigma_j p_jc - v_jc = delta_jc / tau
    # The kernels' remaining operands: gamma folded into the queries, kh^T and delta^T for coalesced reads
    # (khT a copy even where kh^T is already contiguous, S = 1: outputs of a custom op may not alias each other).
    zs: Tensor          # (B, n) gamma zh
    khT: Tensor         # (n, S)
    deltaT: Tensor      # (C, S) tau resid^T
    ce: Tensor          # (S,) -sum_c v_jc logp_jc


def _prepare(z, keys, values, weight, tau, gamma: float) -> _Prepared:
    """All of `_Prepared` from the op's inputs: pure torch, so the forward's fake kernel runs it too."""
    ct = _compute_dtype(z.dtype)
    tau = tau.reshape(()).to(ct)
    zh, z_rnorm, z_clamped = normalize_rows(z.to(ct))
    kh, k_rnorm, k_clamped = normalize_rows(keys.to(ct))
    wh, w_rnorm, w_clamped = normalize_rows(weight.to(ct))
    v = values.to(ct)
    cos = kh @ wh.t()
    logp = torch.log_softmax(tau * cos, dim=1)
    p = logp.exp()
    sigma = v.sum(1, keepdim=True)
    resid = sigma * p - v
    return _Prepared(zh, z_rnorm, z_clamped, kh.contiguous(), k_rnorm, k_clamped, wh, w_rnorm, w_clamped,
                     cos, logp, p, sigma, resid, zs=(gamma * zh).contiguous(),
                     khT=kh.t().clone(memory_format=torch.contiguous_format),
                     deltaT=(tau * resid).t().contiguous(), ce=-(v * logp).sum(1))


def _call_kernel(which: str, prep: _Prepared, entry_dropout: float, seed: int, **arrays):
    """Runs mn._C's `inner_gradient_<which>` on the prepared operands and `arrays` (outputs written in place)."""
    (B, n), (S, C) = prep.zs.shape, prep.cos.shape
    ct, device = prep.zs.dtype, prep.zs.device
    operands = dict(zs=prep.zs, kh=prep.kh, khT=prep.khT, deltaT=prep.deltaT, ce=prep.ce)
    shapes = dict(zs=(B, n), kh=(S, n), khT=(n, S), deltaT=(C, S), ce=(S,), lse=(B,), U=(B, C, n), loss=(B,),
                  dU=(B, C, n), dL=(B,), D=(B,), dzh=(B, n), dkh=(S, n), ddelta=(S, C), dce=(S,))
    ptrs = _kernel_args({**operands, **arrays}, ct, device, shapes)
    cuda = device.type == "cuda"
    stream = torch.cuda.current_stream(device).cuda_stream if cuda else 0
    kernel = getattr(_extension(), f"inner_gradient_{which}")
    with torch.cuda.device(device) if cuda else contextlib.nullcontext():
        kernel(device.type, _dtype_name(ct), B, S, C, n, *_dropout_args(entry_dropout, seed), *ptrs,
               torch.get_num_threads(), stream)


def _workspace_size(B: int, S: int, C: int, n: int) -> int:
    """Elements of the CPU op's workspace, O(B n + S (n + C) + C n) (layout: csrc/cpu/workspace.h)."""
    return _extension().op_workspace_size(B, S, C, n)


def _forward_cpu(z, keys, values, weight, tau, gamma: float, entry_dropout: float, seed: int):
    """The forward op on CPU: one call of mn._C's op_fwd. Outputs as native_inner_gradient_fwd's, with the
    workspace as the one prepared tensor."""
    ct = _compute_dtype(z.dtype)
    (B, n), (S, C) = z.shape, values.shape
    new = functools.partial(torch.empty, dtype=ct, device=z.device)
    ws, grad, loss, lse, a = new(_workspace_size(B, S, C, n)), new(B, C, n), new(B), new(B), new(B, C)
    arrays = dict(z=z.to(ct), keys=keys.to(ct), values=values.to(ct), weight=weight.to(ct), tau=tau.to(ct), ws=ws,
                  grad=grad, loss=loss, lse=lse, a=a)
    shapes = dict(z=(B, n), keys=(S, n), values=(S, C), weight=(C, n), tau=(), ws=(ws.numel(),), grad=(B, C, n),
                  loss=(B,), lse=(B,), a=(B, C))
    ptrs = _kernel_args(arrays, ct, z.device, shapes)
    _extension().op_fwd(_dtype_name(ct), B, S, C, n, gamma, *_dropout_args(entry_dropout, seed), ws.numel(),
                        *ptrs, torch.get_num_threads())
    return grad, loss, lse, a, [ws]


def _forward_generic(z, keys, values, weight, tau, gamma: float, entry_dropout: float, seed: int):
    """The forward op elsewhere (CUDA): torch around mn._C's contraction kernel."""
    prep = _prepare(z, keys, values, weight, tau, gamma)
    (B, n), C = prep.zh.shape, prep.wh.shape[0]
    zeros = functools.partial(torch.zeros, device=z.device, dtype=prep.zh.dtype)
    lse, U, loss = zeros(B), zeros(B, C, n), zeros(B)
    _call_kernel("fwd", prep, entry_dropout, seed, lse=lse, U=U, loss=loss)
    a = (U * prep.wh).sum(-1)                                               # wh_c . U_ic
    grad = U.sub_(a[..., None] * prep.wh).mul_(prep.w_rnorm)               # P_c U_ic, in U's storage
    return grad, loss, lse, a, list(prep)


@torch.library.custom_op("mn::native_inner_gradient_fwd", mutates_args=())
def native_inner_gradient_fwd(z: Tensor, keys: Tensor, values: Tensor, weight: Tensor, tau: Tensor, gamma: float,
                              entry_dropout: float, seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor, list[Tensor]]:
    """-> grad (B, C, n), inner_loss (B,), and for the backward lse (B,), a (B, C) and the preparation (CPU:
    [workspace]; elsewhere: the fields of `_Prepared`), all in the compute dtype: the backward rebuilds D_i and
    the projection term from grad and inner_loss, which rounded to bf16 / fp16 lose all accuracy at a large
    gamma."""
    forward = _forward_cpu if z.device.type == "cpu" else _forward_generic
    return forward(z, keys, values, weight, tau, gamma, entry_dropout, seed)


@native_inner_gradient_fwd.register_fake
def _(z, keys, values, weight, tau, gamma, entry_dropout, seed):
    (B, n), (S, C), ct = z.shape, values.shape, _compute_dtype(z.dtype)
    if z.device.type == "cpu":
        prepared = [z.new_empty(_workspace_size(B, S, C, n), dtype=ct)]
    else:
        prepared = list(_prepare(z, keys, values, weight, tau, gamma))
    return (z.new_empty(B, C, n, dtype=ct), z.new_empty(B, dtype=ct), z.new_empty(B, dtype=ct),
            z.new_empty(B, C, dtype=ct), prepared)


@torch.library.custom_op("mn::native_inner_gradient_bwd", mutates_args=())
def native_inner_gradient_bwd(dgrad: Tensor, dloss: Tensor, z: Tensor, keys: Tensor, values: Tensor, weight: Tensor,
                              tau: Tensor, grad: Tensor, inner_loss: Tensor, lse: Tensor, a: Tensor,
                              prepared: list[Tensor], gamma: float, entry_dropout: float,
                              seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """-> dz, dkeys, dvalues, dweight, dtau, each in its input's dtype (DESIGN §4, with sigma in delta)."""
    backward = _backward_cpu if z.device.type == "cpu" else _backward_generic
    return backward(dgrad, dloss, z, keys, values, weight, tau, grad, inner_loss, lse, a, prepared, gamma,
                    entry_dropout, seed)


def _backward_cpu(dgrad, dloss, z, keys, values, weight, tau, grad, inner_loss, lse, a, prepared, gamma: float,
                  entry_dropout: float, seed: int):
    """The backward op on CPU: one call of mn._C's op_bwd on the forward's workspace."""
    (ws,), ct = prepared, lse.dtype
    (B, n), (S, C) = z.shape, values.shape
    new = functools.partial(torch.empty, dtype=ct, device=z.device)
    dz, dkeys, dvalues, dweight, dtau = new(B, n), new(S, n), new(S, C), new(C, n), new(tau.shape)
    arrays = dict(values=values.to(ct), tau=tau.to(ct), ws=ws, lse=lse, a=a, grad=grad.to(ct),
                  loss=inner_loss.to(ct), dgrad=dgrad.to(ct), dloss=dloss.to(ct), dz=dz, dkeys=dkeys,
                  dvalues=dvalues, dweight=dweight, dtau=dtau)
    shapes = dict(values=(S, C), tau=tuple(tau.shape), ws=(_workspace_size(B, S, C, n),), lse=(B,), a=(B, C),
                  grad=(B, C, n), loss=(B,), dgrad=(B, C, n), dloss=(B,), dz=(B, n), dkeys=(S, n), dvalues=(S, C),
                  dweight=(C, n), dtau=tuple(tau.shape))
    ptrs = _kernel_args(arrays, ct, z.device, shapes)
    _extension().op_bwd(_dtype_name(ct), B, S, C, n, gamma, *_dropout_args(entry_dropout, seed), ws.numel(),
                        *ptrs, torch.get_num_threads())
    return dz.to(z.dtype), dkeys.to(keys.dtype), dvalues.to(values.dtype), dweight.to(weight.dtype), dtau.to(tau.dtype)


def _backward_generic(dgrad, dloss, z, keys, values, weight, tau, grad, inner_loss, lse, a, prepared, gamma: float,
                      entry_dropout: float, seed: int):
    """The backward op elsewhere (CUDA): torch around mn._C's backward contraction kernel."""
    prep = _Prepared(*prepared)
    (B, n), (S, C), ct = prep.zh.shape, prep.cos.shape, prep.zh.dtype
    h, g, dL = dgrad.to(ct), grad.to(ct), dloss.to(ct).contiguous()
    wh, w_rnorm = prep.wh, prep.w_rnorm                                      # (C, n), (C, 1)
    b = (h * wh).sum(-1)                                                     # wh_c . dg_ic
    dU = (h - b[..., None] * wh).mul_(w_rnorm).contiguous()                  # P_c dg_ic
    gh = g * h
    D = (gh.sum(2).sum(1) + dL * inner_loss.to(ct)).contiguous()            # sum_j w_ij dw_ij
    zeros = functools.partial(torch.zeros, device=z.device, dtype=ct)
    dzh, dkh, ddelta, dce = zeros(B, n), zeros(S, n), zeros(S, C), zeros(S)
    _call_kernel("bwd", prep, entry_dropout, seed, lse=lse.contiguous(), dU=dU, dL=dL, D=D, dzh=dzh, dkh=dkh,
                 ddelta=ddelta, dce=dce)
    dzh = gamma * dzh

    # Per entry: delta = tau (sigma p - v), ce = -sum v log p, p = softmax(tau * cos); O(S C + S C n).
    tau_, p, logp, sigma, resid = tau.reshape(()).to(ct), prep.p, prep.logp, prep.sigma, prep.resid
    dp = tau_ * sigma * ddelta
    dv = tau_ * ((p * ddelta).sum(1, keepdim=True) - ddelta) - dce[:, None] * logp
    dl = p * (dp - (p * dp).sum(1, keepdim=True)) + dce[:, None] * resid
    dtau_j = (resid * ddelta + dl * prep.cos).sum(1, keepdim=True)          # (S, 1)
    dtau = dtau_j.sum()
    dkh = dkh + tau_ * (dl @ wh)
    dwh = tau_ * (dl.t() @ prep.kh)
    # The P_c term of the projection, summed over the batch (a = wh . U from the forward).
    dW_proj = -w_rnorm * (gh.sum((0, 2))[:, None] * wh + (b[..., None] * g).sum(0)
                          + (a.to(ct)[..., None] * dU).sum(0))

    dz = normalize_rows_bwd(z.to(ct), prep.z_rnorm, prep.z_clamped, dzh)
    dkeys = normalize_rows_bwd(keys.to(ct), prep.k_rnorm, prep.k_clamped, dkh)
    dweight = normalize_rows_bwd(weight.to(ct), w_rnorm, prep.w_clamped, dwh) + dW_proj
    return (dz.to(z.dtype), dkeys.to(keys.dtype), dv.to(values.dtype), dweight.to(weight.dtype),
            dtau.reshape(tau.shape).to(tau.dtype))


@native_inner_gradient_bwd.register_fake
def _(dgrad, dloss, z, keys, values, weight, tau, grad, inner_loss, lse, a, prepared, gamma, entry_dropout, seed):
    return tuple(torch.empty_like(t) for t in (z, keys, values, weight, tau))


register_inner_gradient_autograd(native_inner_gradient_fwd, native_inner_gradient_bwd, "native")


def inner_gradient_native(z, keys, values, weight, tau, *, gamma, entry_dropout=0.0, seed=0):
    """The backend entry point: (grad (B, C, n), inner_loss (B,)), differentiable through the native backward."""
    grad, loss, *_ = torch.ops.mn.native_inner_gradient_fwd(
        z.contiguous(), keys.contiguous(), values.contiguous(), weight.contiguous(), tau.reshape(()),
        float(gamma), float(entry_dropout), int(seed))
    return grad.to(z.dtype), loss.to(z.dtype)
