"""Backend "native": the C++/OpenMP and CUDA kernels of `mn._C` (csrc/) as the custom-op pair
`mn::native_inner_gradient_fwd` / `_bwd` (fused_ops.py), with their hand-written backward.

Layers, as for Triton (triton_ops.py): `mn._C` (kernels; raw pointers, sizes and a stream in, nothing of torch)
<- this file (argument checks before any pointer leaves Python, the op pair) <- `mn.inner_gradient(backend=
"native")` <- the layers.

Split of the work (docs/design.md, "Kernel plan"): the kernels do the O(B·S·C·n) contractions -- the forward
`U_ic = sum_j w_ij delta_jc kh_j` with its log-sum-exp, and the backward `ddelta`, `dkh`, `dce`, `dzh` with
`X = dU . kh^T` recomputed tile by tile. On CPU everything around them runs in mn._C too (`op_fwd` / `op_bwd`,
one call per direction, since a few dozen small torch calls cost as much as the kernels at small C). On
CUDA it is torch code here, from the same modules as the Triton launchers (mn_kernels.{rownorm, entry_loss,
projection}): normalisation, the per-entry softmax / cross-entropy and the projection, with their backward.

Compute dtype: mn_kernels.dtypes (float64 for float64 inputs, else float32). The forward also returns, for the
backward only, `a_ic = wh_c . U_ic` (B x C) and the per-call preparation, which the backward reuses instead of
recomputing: on CPU one workspace tensor (layout in csrc/cpu/workspace.h), on CUDA the fields of `_Prepared`.
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

from mn_kernels import dropout
from mn_kernels.dtypes import compute_dtype
from mn_kernels.entry_loss import entry_loss, entry_loss_bwd
from mn_kernels.projection import project, projection_bwd, projection_bwd_per_example
from mn_kernels.rownorm import normalize_rows, normalize_rows_bwd

from .fused_ops import register_fused_op

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


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _dropout_args(entry_dropout: float, seed: Tensor | None, device: torch.device) -> tuple[int, int]:
    """The kernels' dropout arguments (csrc/api.h, Dropout): the address of the seed's part of the hash (a 0-d
    int64 tensor in the kernels' memory, read there: no host value) and the threshold."""
    threshold = dropout.drop_threshold(entry_dropout)
    if threshold == 0:
        return 0, 0
    if seed is None or seed.dtype != torch.int64 or seed.numel() != 1 or seed.device != device:
        raise ValueError(f"native kernel argument seed: entry dropout needs the seed's hash part as a one-element "
                         f"int64 tensor on {device} (mn_kernels.dropout.seed_mix_tensor)")
    return seed.data_ptr(), threshold


def _kernel_args(named: dict[str, Tensor], dtype: torch.dtype, device: torch.device, shapes: dict) -> list[int]:
    """Data pointers of the arrays handed to mn._C, after checking what the kernels assume of them: the
    compute dtype, one device, the expected shape, contiguous row-major storage."""
    for name, t in named.items():
        if t.dtype != dtype or t.device != device:
            raise ValueError(f"native kernel argument {name}: expected {dtype} on {device}, "
                             f"got {t.dtype} on {t.device}")
        if tuple(t.shape) != shapes[name]:
            raise ValueError(f"native kernel argument {name}: expected shape {shapes[name]}, got {tuple(t.shape)}")
        if not t.is_contiguous():
            raise ValueError(f"native kernel argument {name} must be contiguous")
    return [t.data_ptr() for t in named.values()]


class _Prepared(NamedTuple):
    """The per-call preparation on CUDA, computed once by the forward op (`_prepare`) and handed to the backward op
    as extra, non-differentiable outputs of the forward: O(B n + S (C + n) + C n) memory, compute dtype."""
    z_rnorm: Tensor     # (B, 1) 1 / max(||z||, eps), and whether that clamp is active
    z_clamped: Tensor
    k_rnorm: Tensor     # (S, 1), likewise for the keys
    k_clamped: Tensor
    wh: Tensor          # (C, n) the normalised shared weight, with its (C, 1) norm terms
    w_rnorm: Tensor
    w_clamped: Tensor
    sigma: Tensor       # (1, S) sum_c v_jc
    # The kernels' operands: gamma folded into the queries, the normalised keys in both orders for coalesced reads
    # (khT a copy even where kh^T is already contiguous, S = 1: outputs of a custom op may not alias each other),
    # the per-entry delta (class-major) and cross-entropy.
    zs: Tensor          # (B, n) gamma zh
    kh: Tensor          # (S, n)
    khT: Tensor         # (n, S)
    deltaT: Tensor      # (C, S)
    ce: Tensor          # (S,)


def _prepare(z, keys, values, weight, tau, gamma: float) -> _Prepared:
    """All of `_Prepared` from the op's inputs: pure torch, so the forward's fake kernel runs it too."""
    ct = compute_dtype(z.dtype)
    zh, z_rnorm, z_clamped = normalize_rows(z.to(ct))
    kh, k_rnorm, k_clamped = normalize_rows(keys.to(ct))
    wh, w_rnorm, w_clamped = normalize_rows(weight.to(ct))
    sigma, ce, deltaT = entry_loss(keys, k_rnorm, wh, values.to(ct).t(), tau.reshape(()).to(ct))
    return _Prepared(z_rnorm, z_clamped, k_rnorm, k_clamped, wh, w_rnorm, w_clamped, sigma,
                     zs=(gamma * zh).contiguous(), kh=kh.contiguous(),
                     khT=kh.t().clone(memory_format=torch.contiguous_format), deltaT=deltaT, ce=ce)


def _call_kernel(which: str, prep: _Prepared, entry_dropout: float, seed: Tensor | None, **arrays):
    """Runs mn._C's `inner_gradient_<which>` on the prepared operands and `arrays` (outputs written in place)."""
    (B, n), (C, S) = prep.zs.shape, prep.deltaT.shape
    ct, device = prep.zs.dtype, prep.zs.device
    operands = dict(zs=prep.zs, kh=prep.kh, khT=prep.khT, deltaT=prep.deltaT, ce=prep.ce)
    shapes = dict(zs=(B, n), kh=(S, n), khT=(n, S), deltaT=(C, S), ce=(S,), lse=(B,), U=(B, C, n), loss=(B,),
                  dU=(B, C, n), dL=(B,), D=(B,), dzh=(B, n), dkh=(S, n), ddelta=(S, C), dce=(S,))
    ptrs = _kernel_args({**operands, **arrays}, ct, device, shapes)
    cuda = device.type == "cuda"
    stream = torch.cuda.current_stream(device).cuda_stream if cuda else 0
    kernel = getattr(_extension(), f"inner_gradient_{which}")
    with torch.cuda.device(device) if cuda else contextlib.nullcontext():
        kernel(device.type, _dtype_name(ct), B, S, C, n, *_dropout_args(entry_dropout, seed, device), *ptrs,
               torch.get_num_threads(), stream)


def _workspace_size(B: int, S: int, C: int, n: int) -> int:
    """Elements of the CPU op's workspace, O(B n + S (n + C) + C n) (layout: csrc/cpu/workspace.h)."""
    return _extension().op_workspace_size(B, S, C, n)


def _forward_cpu(z, keys, values, weight, tau, gamma: float, entry_dropout: float, seed: Tensor | None):
    """The forward op on CPU: one call of mn._C's op_fwd. Outputs as native_inner_gradient_fwd's, with the
    workspace as the one prepared tensor."""
    ct = compute_dtype(z.dtype)
    (B, n), (S, C) = z.shape, values.shape
    new = functools.partial(torch.empty, dtype=ct, device=z.device)
    ws, grad, loss, lse, a = new(_workspace_size(B, S, C, n)), new(B, C, n), new(B), new(B), new(B, C)
    arrays = dict(z=z.to(ct), keys=keys.to(ct), values=values.to(ct), weight=weight.to(ct), tau=tau.to(ct), ws=ws,
                  grad=grad, loss=loss, lse=lse, a=a)
    shapes = dict(z=(B, n), keys=(S, n), values=(S, C), weight=(C, n), tau=(), ws=(ws.numel(),), grad=(B, C, n),
                  loss=(B,), lse=(B,), a=(B, C))
    ptrs = _kernel_args(arrays, ct, z.device, shapes)
    _extension().op_fwd(_dtype_name(ct), B, S, C, n, gamma, *_dropout_args(entry_dropout, seed, z.device), ws.numel(),
                        *ptrs, torch.get_num_threads())
    return grad, loss, lse, a, [ws]


def _forward_generic(z, keys, values, weight, tau, gamma: float, entry_dropout: float, seed: Tensor | None):
    """The forward op elsewhere (CUDA): torch around mn._C's contraction kernel."""
    prep = _prepare(z, keys, values, weight, tau, gamma)
    (B, n), C = prep.zs.shape, prep.wh.shape[0]
    zeros = functools.partial(torch.zeros, device=z.device, dtype=prep.zs.dtype)
    lse, U, loss = zeros(B), zeros(B, C, n), zeros(B)
    _call_kernel("fwd", prep, entry_dropout, seed, lse=lse, U=U, loss=loss)
    a = torch.einsum("bcn,cn->bc", U, prep.wh)                             # wh_c . U_ic
    return project(U, prep.wh, prep.w_rnorm, along=a), loss, lse, a, list(prep)


def _forward(z, keys, values, weight, tau, gamma: float, entry_dropout: float, seed: Tensor | None):
    """-> grad (B, C, n), inner_loss (B,), lse (B,), a (B, C) and the preparation (CPU: [workspace]; elsewhere:
    the fields of `_Prepared`), all in the compute dtype."""
    forward = _forward_cpu if z.device.type == "cpu" else _forward_generic
    return forward(z, keys, values, weight, tau, gamma, entry_dropout, seed)


def _fake_prepared(z, keys, values, weight, tau, gamma, entry_dropout, seed):
    if z.device.type == "cpu":
        (B, n), (S, C) = z.shape, values.shape
        return [z.new_empty(_workspace_size(B, S, C, n), dtype=compute_dtype(z.dtype))]
    return list(_prepare(z, keys, values, weight, tau, gamma))


def _backward(dgrad, dloss, z, keys, values, weight, tau, grad, inner_loss, lse, a, prepared, gamma: float,
              entry_dropout: float, seed: Tensor | None):
    """-> dz, dkeys, dvalues, dweight, dtau, each in its input's dtype."""
    backward = _backward_cpu if z.device.type == "cpu" else _backward_generic
    return backward(dgrad, dloss, z, keys, values, weight, tau, grad, inner_loss, lse, a, prepared, gamma,
                    entry_dropout, seed)


def _backward_cpu(dgrad, dloss, z, keys, values, weight, tau, grad, inner_loss, lse, a, prepared, gamma: float,
                  entry_dropout: float, seed: Tensor | None):
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
    _extension().op_bwd(_dtype_name(ct), B, S, C, n, gamma, *_dropout_args(entry_dropout, seed, z.device), ws.numel(),
                        *ptrs, torch.get_num_threads())
    return dz.to(z.dtype), dkeys.to(keys.dtype), dvalues.to(values.dtype), dweight.to(weight.dtype), dtau.to(tau.dtype)


def _backward_generic(dgrad, dloss, z, keys, values, weight, tau, grad, inner_loss, lse, a, prepared, gamma: float,
                      entry_dropout: float, seed: Tensor | None):
    """The backward op elsewhere (CUDA): torch around mn._C's backward contraction kernel."""
    prep = _Prepared(*prepared)
    (B, n), (C, S), ct = prep.zs.shape, prep.deltaT.shape, prep.zs.dtype
    dg, dL = dgrad.to(ct), dloss.to(ct).contiguous()
    hw, D, dW_proj = projection_bwd(dg, grad.to(ct), dL, inner_loss.to(ct), prep.wh, prep.w_rnorm, a.to(ct))
    dU = project(dg.clone(memory_format=torch.contiguous_format), prep.wh, prep.w_rnorm, along=hw)   # P_c dg
    zeros = functools.partial(torch.zeros, device=z.device, dtype=ct)
    dzh, dkh, ddelta, dce = zeros(B, n), zeros(S, n), zeros(S, C), zeros(S)
    _call_kernel("bwd", prep, entry_dropout, seed, lse=lse.contiguous(), dU=dU, dL=dL, D=D, dzh=dzh, dkh=dkh,
                 ddelta=ddelta, dce=dce)
    del dU
    dv, dtau, dwh = entry_loss_bwd(keys, prep.k_rnorm, prep.wh, values.to(ct).t(), prep.sigma,
                                   tau.reshape(()).to(ct), ddelta.t(), dce, dkh)
    dz = normalize_rows_bwd(z.to(ct), prep.z_rnorm, prep.z_clamped, gamma * dzh)
    dkeys = normalize_rows_bwd(keys.to(ct), prep.k_rnorm, prep.k_clamped, dkh, out=dkh)
    dweight = normalize_rows_bwd(weight.to(ct), prep.w_rnorm, prep.w_clamped, dwh) + dW_proj
    return (dz.to(z.dtype), dkeys.to(keys.dtype), dv.to(values.dtype), dweight.to(weight.dtype),
            dtau.reshape(tau.shape).to(tau.dtype))


inner_gradient_native = register_fused_op("native", _forward, _backward, _fake_prepared)


# ---------------------------------------------------------------------------------------------------- later steps
class _LaterPrepared(NamedTuple):
    """The later step's per-call preparation (CPU), handed from the forward op to the backward op."""
    zs: Tensor          # (B, n) gamma zh, with 1 / max(||z||, eps) and the clamp flag, (B, 1) each
    z_rnorm: Tensor
    z_clamped: Tensor
    kh: Tensor          # (S, n) and its transpose, with the keys' norm terms
    khT: Tensor
    k_rnorm: Tensor
    k_clamped: Tensor
    ph: Tensor          # (B*C, n) the normalised per-example weights, with their norm terms
    p_rnorm: Tensor
    p_clamped: Tensor
    vT: Tensor          # (C, S) values, class-major, and sigma (S,) their row sums
    sigma: Tensor
    tau: Tensor         # (1,) in the compute dtype (a copy: outputs of a custom op may not alias its inputs)


def _later_prepare(z, keys, values, phi, tau, gamma: float) -> _LaterPrepared:
    ct = compute_dtype(z.dtype)
    B, C, n = phi.shape
    zh, z_rnorm, z_clamped = normalize_rows(z.to(ct))
    kh, k_rnorm, k_clamped = normalize_rows(keys.to(ct))
    ph, p_rnorm, p_clamped = normalize_rows(phi.reshape(B * C, n).to(ct))
    v = values.to(ct)
    return _LaterPrepared((gamma * zh).contiguous(), z_rnorm, z_clamped, kh.contiguous(),
                          kh.t().clone(memory_format=torch.contiguous_format), k_rnorm, k_clamped, ph.contiguous(),
                          p_rnorm, p_clamped, v.t().clone(memory_format=torch.contiguous_format), v.sum(1),
                          tau.reshape(1).to(ct, copy=True))


def _later_operand_ptrs(prep: _LaterPrepared, shape: tuple) -> list[int]:
    B, S, C, n = shape
    named = dict(zs=prep.zs, kh=prep.kh, khT=prep.khT, ph=prep.ph, p_rnorm=prep.p_rnorm, vT=prep.vT,
                 sigma=prep.sigma, tau=prep.tau)
    shapes = dict(zs=(B, n), kh=(S, n), khT=(n, S), ph=(B * C, n), p_rnorm=(B * C, 1), vT=(C, S), sigma=(S,),
                  tau=(1,))
    return _kernel_args(named, prep.zs.dtype, prep.zs.device, shapes)


def _later_forward(z, keys, values, phi, tau, gamma: float, entry_dropout: float, seed: Tensor | None):
    """The later step's forward on CPU: one call of mn._C's later_step_fwd around the torch preparation."""
    if z.device.type != "cpu":
        raise ValueError(f"the native later step runs on CPU only, got {z.device}")
    prep = _later_prepare(z, keys, values, phi, tau, gamma)
    (B, n), (S, C), ct = z.shape, values.shape, prep.zs.dtype
    new = functools.partial(torch.empty, dtype=ct, device=z.device)
    lse, grad, loss, a = new(B), new(B, C, n), new(B), new(B, C)
    ptrs = _later_operand_ptrs(prep, (B, S, C, n))
    outs = _kernel_args(dict(lse=lse, grad=grad, loss=loss, a=a), ct, z.device,
                        dict(lse=(B,), grad=(B, C, n), loss=(B,), a=(B, C)))
    _extension().later_step_fwd(_dtype_name(ct), B, S, C, n, *_dropout_args(entry_dropout, seed, z.device), *ptrs,
                                *outs, torch.get_num_threads())
    return grad, loss, lse, a, list(prep)


def _later_backward(dgrad, dloss, z, keys, values, phi, tau, grad, inner_loss, lse, a, prepared, gamma: float,
                    entry_dropout: float, seed: Tensor | None):
    """The later step's backward on CPU: the per-example projection's host terms, one call of mn._C's
    later_step_bwd, and the normalisations' backward."""
    prep = _LaterPrepared(*prepared)
    (B, n), (S, C), ct = z.shape, values.shape, prep.zs.dtype
    dg, dL = dgrad.to(ct), dloss.to(ct).contiguous()
    ph, rnorm = prep.ph.view(B, C, n), prep.p_rnorm.view(B, C, 1)
    hw, D, dphi_proj = projection_bwd_per_example(dg, grad.to(ct), dL, inner_loss.to(ct), ph, rnorm, a.to(ct))
    dU = project(dg.clone(memory_format=torch.contiguous_format), ph, rnorm, along=hw)      # P_ic dg_ic
    new = functools.partial(torch.empty, dtype=ct, device=z.device)
    dzh, dph, dkh, dv, dtau = new(B, n), new(B, C, n), new(S, n), new(S, C), new(1)
    ptrs = _later_operand_ptrs(prep, (B, S, C, n))
    arrays = _kernel_args(dict(lse=lse, dU=dU, dL=dL, D=D, dzh=dzh, dph=dph, dkh=dkh, dv=dv, dtau=dtau), ct,
                          z.device, dict(lse=(B,), dU=(B, C, n), dL=(B,), D=(B,), dzh=(B, n), dph=(B, C, n),
                                         dkh=(S, n), dv=(S, C), dtau=(1,)))
    _extension().later_step_bwd(_dtype_name(ct), B, S, C, n, *_dropout_args(entry_dropout, seed, z.device), *ptrs,
                                *arrays, torch.get_num_threads())
    dz = normalize_rows_bwd(z.to(ct), prep.z_rnorm, prep.z_clamped, gamma * dzh)
    dkeys = normalize_rows_bwd(keys.to(ct), prep.k_rnorm, prep.k_clamped, dkh, out=dkh)
    dphi = normalize_rows_bwd(phi.reshape(B * C, n).to(ct), prep.p_rnorm, prep.p_clamped, dph.view(B * C, n))
    dphi = dphi.view(B, C, n).add_(dphi_proj)
    return (dz.to(z.dtype), dkeys.to(keys.dtype), dv.to(values.dtype), dphi.to(phi.dtype),
            dtau.reshape(tau.shape).to(tau.dtype))


def _later_fake_prepared(z, keys, values, phi, tau, gamma, entry_dropout, seed):
    return list(_later_prepare(z, keys, values, phi, tau, gamma))


later_step_native = register_fused_op("native", _later_forward, _later_backward, _later_fake_prepared,
                                      op="later_step")


def later_rejects(device: torch.device, n: int, dtype: torch.dtype) -> str | None:
    """Why the native later step cannot run there, or None: it has CPU kernels only (on CUDA, steps 2..T run on
    the `torch` reference); it takes any n."""
    return None if device.type == "cpu" else "the native later step has CPU kernels only"
