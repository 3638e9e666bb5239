"""Backend "native": the C++/OpenMP and CUDA kernels of `mn._C` (csrc/) as a PyTorch op with a hand-written backward.

Layers, as for Triton (triton_ops.py): `mn._C` (kernels; raw pointers, sizes and a stream in, nothing of torch)
<- this file (argument checks before any pointer leaves Python, the O(S·C·n) per-entry terms and the O(B·C·n)
projection terms in torch, two `torch.library` custom ops `mn::native_inner_gradient_fwd` / `_bwd` with fake
kernels, joined by `register_autograd`) <- `mn.inner_gradient(backend="native")` <- the layers.

Split of the work (DESIGN §4): the kernels do the O(B·S·C·n) contractions -- the forward `U_ic = sum_j w_ij
delta_jc kh_j` with its log-sum-exp, and the backward `ddelta`, `dkh`, `dce`, `dzh` with `X = dU . kh^T`
recomputed tile by tile. Normalisation, the per-entry softmax / cross-entropy and their backward, and the
projection `P_c` stay here as a few torch calls. `delta_jc = tau (sigma_j p_jc - v_jc)`, sigma_j = sum_c v_jc
(the exact derivative of the cross-entropy also off the simplex), as in every backend.

Compute dtype: float64 for float64 inputs, else float32 (bf16 / fp16 inputs are computed in float32 and the
results cast back). The forward also returns `a_ic = wh_c . U_ic` (B x C), the component the projection removes,
which the backward's P_c term needs. CPU kernels use `torch.get_num_threads()` threads; results do not depend
on the thread count. The op takes the shared weight (C, n) only; inner steps 2..T run on the `torch` reference.
"""
from __future__ import annotations

import contextlib
import functools
import importlib

import torch
from torch import Tensor

from .dropout import drop_threshold

EPS = 1e-12


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


def _normalize(x):
    """Row-wise x / max(||x||, eps); returns (xh, 1 / max(||x||, eps), whether the clamp is active)."""
    norm = x.norm(dim=1, keepdim=True)
    return x / norm.clamp_min(EPS), 1.0 / norm.clamp_min(EPS), norm < EPS


def _normalize_bwd(xh, rnorm, clamped, dxh):
    """Backward of x / max(||x||, eps): (dxh - xh (xh . dxh)) / ||x||, or dxh / eps where clamped."""
    radial = torch.where(clamped, 0.0, (xh * dxh).sum(1, keepdim=True))
    return (dxh - xh * radial) * rnorm


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


def _tn(a: Tensor, b: Tensor) -> Tensor:
    """a^T b for a (K, M), b (K, N), K the long axis (the dictionary). On CPU through mn._C, which splits K
    in a fixed way: BLAS splits it by its thread count, and the results would change with torch.set_num_threads."""
    if a.device.type != "cpu":
        return a.t() @ b
    (K, M), N = a.shape, b.shape[1]
    a, b = a.contiguous(), b.contiguous()
    out = a.new_empty(M, N)
    ptrs = _kernel_args({"a": a, "b": b, "out": out}, a.dtype, a.device, {"a": (K, M), "b": (K, N), "out": (M, N)})
    _extension().matmul_tn(str(a.dtype).removeprefix("torch."), K, M, N, *ptrs, torch.get_num_threads())
    return out


class _Setup:
    """Per-call preparation shared by forward and backward: hats, the per-entry softmax / CE terms, and the
    kernels' operands (gamma folded into the queries: zs = gamma zh; kh^T and delta^T for coalesced reads)."""

    def __init__(self, z, keys, values, weight, tau, gamma, entry_dropout, seed):
        (self.B, self.n), (self.S, self.C) = z.shape, values.shape
        self.device, self.dtype = z.device, z.dtype
        self.ct = ct = _compute_dtype(z.dtype)
        self.gamma = float(gamma)
        self.tau = tau.reshape(()).to(ct)
        self.zh, self.z_rnorm, self.z_clamped = _normalize(z.to(ct))
        self.kh, self.k_rnorm, self.k_clamped = _normalize(keys.to(ct))
        self.wh, self.w_rnorm, self.w_clamped = _normalize(weight.to(ct))
        self.v = values.to(ct)
        self.cos = self.kh @ self.wh.t()                                     # kh_j . wh_c   (S x C)
        self.logp = torch.log_softmax(self.tau * self.cos, dim=1)
        self.p = self.logp.exp()
        self.ce = -(self.v * self.logp).sum(1)
        self.sigma = self.v.sum(1, keepdim=True)
        self.delta = self.tau * (self.sigma * self.p - self.v)
        self.seed_mix = (int(seed) * 0x9E3779B1) & 0xFFFFFFFF
        self.threshold = drop_threshold(entry_dropout)
        B, S, C, n = self.B, self.S, self.C, self.n
        self.operands = dict(zs=(self.gamma * self.zh).contiguous(), kh=self.kh.contiguous(),
                             khT=self.kh.t().contiguous(), deltaT=self.delta.t().contiguous(), ce=self.ce.contiguous())
        self.shapes = dict(zs=(B, n), kh=(S, n), khT=(n, S), deltaT=(C, S), ce=(S,), lse=(B,), U=(B, C, n),
                           loss=(B,), dU=(B, C, n), dL=(B,), D=(B,), dzh=(B, n), dkh=(S, n), ddelta=(S, C), dce=(S,))

    def call(self, which: str, **arrays):
        """Runs mn._C's `inner_gradient_<which>` on the operands and `arrays` (outputs written in place)."""
        ptrs = _kernel_args({**self.operands, **arrays}, self.ct, self.device, self.shapes)
        cuda = self.device.type == "cuda"
        stream = torch.cuda.current_stream(self.device).cuda_stream if cuda else 0
        kernel = getattr(_extension(), f"inner_gradient_{which}")
        with torch.cuda.device(self.device) if cuda else contextlib.nullcontext():
            kernel(self.device.type, str(self.ct).removeprefix("torch."), self.B, self.S, self.C, self.n,
                   self.seed_mix, self.threshold, *ptrs, torch.get_num_threads(), stream)


@torch.library.custom_op("mn::native_inner_gradient_fwd", mutates_args=())
def native_inner_gradient_fwd(z: Tensor, keys: Tensor, values: Tensor, weight: Tensor, tau: Tensor, gamma: float,
                              entry_dropout: float, seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """-> grad (B, C, n), inner_loss (B,) in z's dtype; lse (B,) and a (B, C) in the compute dtype (for backward)."""
    st = _Setup(z, keys, values, weight, tau, gamma, entry_dropout, seed)
    B, C, n, ct = st.B, st.C, st.n, st.ct
    zeros = functools.partial(torch.zeros, device=z.device, dtype=ct)
    lse, U, loss = zeros(B), zeros(B, C, n), zeros(B)
    st.call("fwd", lse=lse, U=U, loss=loss)
    a = (U * st.wh).sum(-1)                                                  # wh_c . U_ic
    grad = (U - a[..., None] * st.wh) * st.w_rnorm                          # P_c U_ic
    return grad.to(z.dtype), loss.to(z.dtype), lse, a


@native_inner_gradient_fwd.register_fake
def _(z, keys, values, weight, tau, gamma, entry_dropout, seed):
    B, C, n = z.shape[0], weight.shape[0], weight.shape[1]
    ct = _compute_dtype(z.dtype)
    return z.new_empty(B, C, n), z.new_empty(B), z.new_empty(B, dtype=ct), z.new_empty(B, C, dtype=ct)


@torch.library.custom_op("mn::native_inner_gradient_bwd", mutates_args=())
def native_inner_gradient_bwd(dgrad: Tensor, dloss: Tensor, z: Tensor, keys: Tensor, values: Tensor, weight: Tensor,
                              tau: Tensor, grad: Tensor, inner_loss: Tensor, lse: Tensor, a: Tensor, gamma: float,
                              entry_dropout: float, seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """-> dz, dkeys, dvalues, dweight, dtau, each in its input's dtype (DESIGN §4, with sigma in delta)."""
    st = _Setup(z, keys, values, weight, tau, gamma, entry_dropout, seed)
    B, S, C, n, ct = st.B, st.S, st.C, st.n, st.ct
    h, g, dL = dgrad.to(ct), grad.to(ct), dloss.to(ct).contiguous()
    wh, w_rnorm = st.wh, st.w_rnorm                                          # (C, n), (C, 1)
    b = (h * wh).sum(-1)                                                     # wh_c . dg_ic
    dU = ((h - b[..., None] * wh) * w_rnorm).contiguous()                    # P_c dg_ic
    # Reductions here keep at least two outputs (ATen then splits along the outputs, so the rounding does not
    # depend on the thread count) or go through _tn.
    D = ((g * h).sum(2).sum(1) + dL * inner_loss.to(ct)).contiguous()       # sum_j w_ij dw_ij
    zeros = functools.partial(torch.zeros, device=z.device, dtype=ct)
    dzh, dkh, ddelta, dce = zeros(B, n), zeros(S, n), zeros(S, C), zeros(S)
    st.call("bwd", lse=lse.contiguous(), dU=dU, dL=dL, D=D, dzh=dzh, dkh=dkh, ddelta=ddelta, dce=dce)
    dzh = st.gamma * dzh

    # Per entry: delta = tau (sigma p - v), ce = -sum v log p, p = softmax(tau * cos); O(S C + S C n).
    tau_, p, v, logp, sigma = st.tau, st.p, st.v, st.logp, st.sigma
    dp = tau_ * sigma * ddelta
    dv = tau_ * ((p * ddelta).sum(1, keepdim=True) - ddelta) - dce[:, None] * logp
    dl = p * (dp - (p * dp).sum(1, keepdim=True)) + dce[:, None] * (sigma * p - v)
    dtau_j = ((sigma * p - v) * ddelta + dl * st.cos).sum(1, keepdim=True)   # (S, 1)
    dtau = _tn(dtau_j, torch.ones_like(dtau_j)).reshape(())
    dkh = dkh + tau_ * (dl @ wh)
    dwh = tau_ * _tn(dl, st.kh)
    # The P_c term of the projection, summed over the batch (a = wh . U from the forward).
    dW_proj = -w_rnorm * ((h * g).sum((0, 2))[:, None] * wh + (b[..., None] * g).sum(0)
                          + (a.to(ct)[..., None] * dU).sum(0))

    dz = _normalize_bwd(st.zh, st.z_rnorm, st.z_clamped, dzh)
    dkeys = _normalize_bwd(st.kh, st.k_rnorm, st.k_clamped, dkh)
    dweight = _normalize_bwd(wh, w_rnorm, st.w_clamped, dwh) + dW_proj
    return (dz.to(z.dtype), dkeys.to(keys.dtype), dv.to(values.dtype), dweight.to(weight.dtype),
            dtau.reshape(tau.shape).to(tau.dtype))


@native_inner_gradient_bwd.register_fake
def _(dgrad, dloss, z, keys, values, weight, tau, grad, inner_loss, lse, a, gamma, entry_dropout, seed):
    return tuple(torch.empty_like(t) for t in (z, keys, values, weight, tau))


def _setup_context(ctx, inputs, output):
    z, keys, values, weight, tau, ctx.gamma, ctx.entry_dropout, ctx.seed = inputs
    ctx.save_for_backward(z, keys, values, weight, tau, *output)


def _backward(ctx, dgrad, dloss, _dlse, _da):
    z, keys, values, weight, tau, grad, inner_loss, lse, a = ctx.saved_tensors
    dz, dkeys, dvalues, dweight, dtau = torch.ops.mn.native_inner_gradient_bwd(
        dgrad.contiguous(), dloss.contiguous(), z, keys, values, weight, tau, grad, inner_loss, lse, a,
        ctx.gamma, ctx.entry_dropout, ctx.seed)
    return dz, dkeys, dvalues, dweight, dtau, None, None, None


native_inner_gradient_fwd.register_autograd(_backward, setup_context=_setup_context)


def inner_gradient_native(z, keys, values, weight, tau, *, gamma, entry_dropout=0.0, seed=0):
    """The backend entry point: (grad (B, C, n), inner_loss (B,)), differentiable through the native backward."""
    grad, loss, _, _ = torch.ops.mn.native_inner_gradient_fwd(
        z.contiguous(), keys.contiguous(), values.contiguous(), weight.contiguous(), tau.reshape(()),
        float(gamma), float(entry_dropout), int(seed))
    return grad, loss
