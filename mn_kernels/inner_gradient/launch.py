"""Host side of the inner-gradient kernels: the per-call preparation, the launches, and the O(S C n + B C n) math
around them (row norms, the per-entry loss, the projection), all from the shared modules of mn_kernels."""
import functools

import torch
import triton

from .. import dropout
from ..dtypes import compute_dtype, dot_precision, side_dot_precision
from ..launching import max_features, multiprocessors, operand_dtype
from ..projection import projection_bwd
from ..rows import normalize_rows, rows_bwd
from .backward import bwd_kernel
from .entries import entry_bwd_kernel, entry_fwd_kernel
from .forward import fwd_kernel, lse_kernel


class Setup:
    """Per-call preparation shared by forward and backward: row norms, per-entry delta and ce, launch constants.

    The forward computes the tensors of ``SAVED`` and returns them (``saved()``); the backward takes them back
    (``saved=``) instead of recomputing them: O(B n + C n + S C) memory between the two, and the backward's
    host work shrinks by the normalisations and the per-entry softmax."""

    SAVED = ("zs_op", "z_rnorm", "wh", "w_rnorm", "k_rnorm", "sigma", "ce", "deltaT")
    PER_EXAMPLE = False         # the weight is shared (C, n); the later-step op's subclass takes (B, C, n)
    MAX_FEATURES = staticmethod(max_features)      # the largest n the kernels take, per input dtype

    def __init__(self, z, keys, values, weight, tau, gamma, entry_dropout, seed, saved=None, launch=True):
        """seed: the seed's part of the dropout hash, a 0-d int64 tensor on z's device (None without dropout).
        launch=False allocates what the preparation's kernels would fill without running them (fake tensors)."""
        self.launch = launch
        for name, t in (("keys", keys), ("values", values), ("weight", weight), ("tau", tau)):
            if t.dtype != z.dtype or t.device != z.device:
                raise ValueError(f"{name} must have z's dtype {z.dtype} and device {z.device}, "
                                 f"got {t.dtype} on {t.device}")
        (B, n), (S, C) = z.shape, values.shape
        want = (B, C, n) if self.PER_EXAMPLE else (C, n)
        if keys.shape != (S, n) or weight.shape != want or tau.dim() != 0:
            raise ValueError(f"expected keys {(S, n)}, weight {want}, 0-d tau; got {tuple(keys.shape)}, "
                             f"{tuple(weight.shape)}, {tuple(tau.shape)}")
        if n > self.MAX_FEATURES(z.dtype):
            raise ValueError(f"z has n = {n} features; the Triton kernels take n <= {self.MAX_FEATURES(z.dtype)} "
                             f"with {z.dtype} inputs (whole feature rows per tile)")
        if not 0.0 <= entry_dropout < 1.0:
            raise ValueError(f"entry_dropout must be in [0, 1), got {entry_dropout}")
        if B >= 2**31:
            raise ValueError("batch too large for the int32 query index of the dropout hash")
        self.B, self.S, self.C, self.n = B, S, C, n
        self.ct = ct = compute_dtype(z.dtype)
        self.gamma = float(gamma)
        self.tau = tau.to(ct)
        # Keys stay raw: the kernels normalise each tile as they load it (no S x n copy of the dictionary).
        self.keys = keys.contiguous()
        self.values = values.to(ct).contiguous()                          # (S, C), entry-major
        self.vT = self.values.t()                                         # class-major view
        # Dot operands in the input dtype (bf16/fp16 tensor cores); side data in the compute dtype.
        self.op_dtype = operand_dtype(z.dtype)
        self.block_n = max(16, triton.next_power_of_2(n))
        threshold = dropout.drop_threshold(entry_dropout)
        if threshold > 0 and (seed is None or seed.device != z.device or seed.dtype != torch.int64):
            raise ValueError("entry dropout needs the seed's hash part as an int64 tensor on z's device "
                             "(mn_kernels.dropout.seed_mix_tensor)")
        # Without dropout the kernels never read the seed; any tensor fills the pointer argument.
        self.consts = dict(seed_ptr=seed if threshold > 0 else self.keys, drop_threshold=threshold,
                           s_bucket=triton.next_power_of_2(S))
        self.meta = dict(BLOCK_N=self.block_n, HAS_DROPOUT=threshold > 0, PRECISION=dot_precision(z.dtype))
        if saved is not None:
            if len(saved) != len(self.SAVED):
                raise ValueError(f"expected the forward's {len(self.SAVED)} saved tensors, got {len(saved)}")
            for name, t in zip(self.SAVED, saved):
                setattr(self, name, t)
        else:
            self._prepare(z, weight)

    def _prepare(self, z, weight):
        self._prepare_queries(z)
        self.wh, w_rnorm = self._normalized(weight)
        self.w_rnorm = w_rnorm.view(-1, 1)                                   # (C, 1): broadcasts over features
        # The keys' norms and the per-entry terms (mn_kernels/entry_loss.py) in one kernel.
        S, C, new = self.S, self.C, functools.partial(torch.empty, device=z.device, dtype=self.ct)
        self.k_rnorm, self.sigma, self.ce, self.deltaT = new(S), new(S), new(S), new(C, S)
        if self.launch:
            grid = lambda meta: (triton.cdiv(S, meta["BLOCK_S"]),)  # noqa: E731
            entry_fwd_kernel[grid](self.keys, self.wh, self.values, self.tau, self.k_rnorm, self.sigma,
                                   self.ce, self.deltaT, S, C, self.n, s_bucket=self.consts["s_bucket"],
                                   BLOCK_N=self.block_n, PRECISION=side_dot_precision(z.dtype))

    def _normalized(self, x):
        """(x / max(||x||, eps), 1 / max(||x||, eps)) row-wise in the compute dtype: mn_kernels/rows.py's kernel, or
        empty tensors of those shapes without launching."""
        if self.launch:
            return normalize_rows(x, self.ct)
        return torch.empty(x.shape, device=x.device, dtype=self.ct), torch.empty(x.shape[0], device=x.device,
                                                                                  dtype=self.ct)

    def _prepare_queries(self, z):
        """The queries' part of the attention: gamma zh as the dot operand, and the norm terms of z."""
        zh, self.z_rnorm = self._normalized(z)
        # gamma is folded into the query operand: the kernels see scores zs . kh = gamma zh . kh.
        self.zs_op = (self.gamma * zh).to(self.op_dtype).contiguous()

    def saved(self) -> list:
        """The tensors the backward takes back (``SAVED``, in order)."""
        return [getattr(self, name) for name in self.SAVED]

    def attention_lse(self):
        """lse_i = log sum_j exp(s_ij) over the kept entries (B,), -inf for a query with none kept."""
        B, S = self.B, self.S
        # Enough entry splits to give every SM work; each split a multiple of the largest BLOCK_S.
        # (In the interpreter 2 splits exercise the split combine in the tests.)
        target = 2 * (multiprocessors(self.keys.device) or 1)
        splits = max(1, min(triton.cdiv(S, 128), target // triton.cdiv(B, 16)))
        per_split = triton.cdiv(triton.cdiv(S, splits), 128) * 128
        splits = triton.cdiv(S, per_split)
        m = torch.empty(splits, B, device=self.keys.device, dtype=self.ct)
        l = torch.empty_like(m)  # noqa: E741 (the log-sum-exp's l)
        grid = lambda meta: (triton.cdiv(B, meta["BLOCK_B"]), splits)  # noqa: E731
        lse_kernel[grid](self.zs_op, self.keys, self.k_rnorm.reshape(S), m, l, B, S, self.C, self.n,
                         entries_per_split=per_split, **self.consts, **self.meta)
        return torch.logsumexp(m + l.log(), dim=0)  # l = 0 (all dropped) -> -inf, never NaN


def inner_gradient_fwd(z, keys, values, weight, tau, gamma: float, entry_dropout: float = 0.0, seed=None):
    """z (B,n), keys (S,n), values (S,C) row-probabilities, weight (C,n), tau 0-d tensor (same device).

    Raw (un-normalised) inputs; all contiguous, same floating dtype and device. seed: with dropout, the seed's
    part of the hash as a 0-d int64 tensor on the same device (``mn_kernels.dropout.seed_mix_tensor``).
    Returns, in the compute dtype (float32; float64 for float64 inputs), grad (B,C,n), inner_loss (B,), and
    what the backward needs besides them: lse (B,), the attention log-normaliser, a (B,C), a_ic = wh_c . U_ic,
    and the preparation (a list, ``Setup.SAVED``; the query operand in the dot dtype). grad and inner_loss stay
    in the compute dtype because the backward rebuilds D_i and the projection term from them, which rounded to
    bf16 / fp16 would lose all accuracy at a large gamma."""
    st = Setup(z, keys, values, weight, tau, gamma, entry_dropout, seed)
    B, S, C, n = st.B, st.S, st.C, st.n
    lse = st.attention_lse()
    grad = torch.empty(B, C, n, device=z.device, dtype=st.ct)
    loss = torch.empty(B, device=z.device, dtype=st.ct)
    a = torch.empty(B, C, device=z.device, dtype=st.ct)
    grid = lambda meta: (triton.cdiv(B, meta["BLOCK_B"]), triton.cdiv(C, meta["BLOCK_C"]))  # noqa: E731
    fwd_kernel[grid](st.zs_op, st.keys, st.k_rnorm.reshape(S), st.deltaT, st.ce, lse, st.wh,
                     st.w_rnorm.reshape(C).contiguous(), grad, loss, a, B, S, C, n, **st.consts, **st.meta)
    return grad, loss, lse, a, st.saved()


def inner_gradient_bwd(dgrad, dloss, z, keys, values, weight, tau, grad, inner_loss, lse, a, saved, gamma: float,
                       entry_dropout: float = 0.0, seed=None):
    """dgrad (B,C,n), dloss (B,) in the compute dtype; z..tau as in the forward; grad, inner_loss, lse, a, saved:
    the forward's outputs.

    Returns (dz (B,n), dkeys (S,n), dvalues (S,C), dweight (C,n), dtau 0-d), each in its input's dtype."""
    st = Setup(z, keys, values, weight, tau, gamma, entry_dropout, seed, saved=saved)
    B, S, C, n, ct = st.B, st.S, st.C, st.n, st.ct
    if dgrad.shape != (B, C, n) or grad.shape != (B, C, n) or dloss.shape != (B,) or inner_loss.shape != (B,) \
            or lse.shape != (B,) or a.shape != (B, C):
        raise ValueError(f"expected dgrad and grad {(B, C, n)}, dloss, inner_loss and lse {(B,)}, a {(B, C)}")
    # No B x C x n temporary with fp32 inputs (extra-memory budget): the kernel forms dU = P_c dg tile by tile.
    dg = dgrad.to(ct).contiguous()
    hw, D, dW_proj = projection_bwd(dg, grad.to(ct), dloss.to(ct), inner_loss.to(ct), st.wh, st.w_rnorm, a.to(ct))
    # The kernel reads dg as a dot operand: in the input dtype (bf16 / fp16 halve its traffic; the upstream
    # gradient of a bf16 output holds no more bits than that).
    h = dg.to(st.op_dtype)
    del dg

    # P programs, each owning a contiguous group of entry tiles: the fewest programs that still give no SM
    # more than ceil(tiles / SMs) tiles (the kernel's time), since each one costs a B x n dzh partial.
    # (In the interpreter 3 programs exercise multi-tile programs and the partial reduction in the tests.)
    target = multiprocessors(z.device) or 3
    tiles = triton.cdiv(S, max(config.kwargs["BLOCK_S"] for config in bwd_kernel.configs))
    programs = triton.cdiv(tiles, triton.cdiv(tiles, target))
    dkh = torch.empty(S, n, device=z.device, dtype=ct)
    dce = torch.empty(S, device=z.device, dtype=ct)
    ddeltaT = torch.empty(C, S, device=z.device, dtype=ct)
    dzh_part = torch.empty(programs, B, n, device=z.device, dtype=ct)
    bwd_kernel[(programs,)](st.zs_op, st.keys, st.k_rnorm.reshape(S), st.deltaT, st.ce, lse.to(ct).contiguous(),
                            h, hw, st.wh, st.w_rnorm.reshape(C).contiguous(), dloss.to(ct).contiguous(), D, dkh,
                            dce, ddeltaT, dzh_part, B, S, C, n, **st.consts, **st.meta)
    del h
    # z's normalisation backward with the partials' sum, one kernel, before the per-entry backward allocates: the
    # B x n partials are freed first (the backward is linear in dzh: gamma applied after, exact also in float64).
    dz = rows_bwd(dzh_part, z, st.z_rnorm).mul_(st.gamma)
    del dzh_part

    # The per-entry backward, and the keys' normalisation backward in dkh's storage, in one kernel.
    dv = torch.empty(S, C, device=z.device, dtype=ct)
    # zeros: an entry config with larger tiles than the main kernel's would leave a program without a tile
    dwh_part = torch.zeros(programs, C, n, device=z.device, dtype=ct)
    dtau_part = torch.empty(programs, device=z.device, dtype=ct)
    entry_bwd_kernel[(programs,)](st.keys, st.wh, st.values, st.tau, st.sigma, ddeltaT, dce, dkh, dv,
                                  dwh_part, dtau_part, S, C, n, s_bucket=st.consts["s_bucket"], BLOCK_N=st.block_n,
                                  PRECISION=side_dot_precision(z.dtype))
    # The weight's normalisation backward with the partials' sum and the projection's term, one kernel.
    dweight = rows_bwd(dwh_part, weight, st.w_rnorm.view(-1), extra=dW_proj)
    dkeys, dtau = dkh, dtau_part.sum()
    dt = z.dtype
    return dz.to(dt), dkeys.to(dt), dv.to(dt), dweight.to(dt), dtau.to(dt)
