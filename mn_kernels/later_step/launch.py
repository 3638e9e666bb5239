"""Host side of the later-step kernels: the per-call preparation (step 1's attention part, plus the normalised
per-example weights), the launches, and the per-example projection's host terms."""
import torch
import triton

from ..inner_gradient.launch import Setup
from ..launching import multiprocessors
from ..projection import projection_bwd_per_example
from ..rownorm import row_rnorm
from ..rows import rows_bwd
from .backward import bwd_entry_kernel, bwd_query_kernel, bwd_stats_kernel
from .configs import max_features
from .forward import fwd_kernel, stats_kernel


class LaterSetup(Setup):
    """Step 1's preparation of the queries, keys and dropout (``Setup``), with per-example weights phi (B, C, n):
    their normalised rows (the dot operand, B*C x n) and reciprocal norms, the values class-major, sigma, and
    the attention's lse. The forward hands these to the backward (``SAVED``)."""

    SAVED = ("zs_op", "z_rnorm", "k_rnorm", "ph_op", "p_rnorm", "sigma", "m", "ce")
    PER_EXAMPLE = True
    MAX_FEATURES = staticmethod(max_features)

    def _prepare(self, z, weight):
        self._prepare_queries(z)
        self.k_rnorm = row_rnorm(self.keys, self.ct)[0].view(-1)
        B, C, n = weight.shape
        ph, self.p_rnorm = self._normalized(weight.reshape(B * C, n))
        self.ph_op = ph.to(self.op_dtype).contiguous()
        self.sigma = self.vT.sum(0).contiguous()                          # (S,)
        # m_ij and ce_ij, B x S: filled by the forward's first kernel.
        self.m = torch.empty(B, self.S, device=z.device, dtype=self.ct)
        self.ce = torch.empty_like(self.m)


def later_step_fwd(z, keys, values, phi, tau, gamma: float, entry_dropout: float = 0.0, seed=None):
    """z (B,n), keys (S,n), values (S,C), phi (B,C,n) per-example weights, tau 0-d tensor; one dtype and device.
    seed: with dropout, the seed's part of the hash as a 0-d int64 tensor (``mn_kernels.dropout.seed_mix_tensor``),
    the one step 1 used. Returns, in the compute dtype, grad (B,C,n), inner_loss (B,), lse (B,) (the attention's
    log-normaliser), a (B,C) = phh_ic . U_ic, and the preparation (a list, ``LaterSetup.SAVED``): step 1's
    outputs, so that one op factory serves both."""
    st = LaterSetup(z, keys, values, phi, tau, gamma, entry_dropout, seed)
    B, S, C, n = st.B, st.S, st.C, st.n
    vT = st.vT.contiguous()
    lse = st.attention_lse()
    grid = lambda meta: (triton.cdiv(B, meta["BLOCK_B"]), triton.cdiv(S, meta["BLOCK_S"]))  # noqa: E731
    stats_kernel[grid](st.ph_op, st.keys, st.k_rnorm.reshape(S), vT, st.sigma, st.tau, st.m, st.ce, B, S, C, n,
                       s_bucket=st.consts["s_bucket"], BLOCK_N=st.block_n, PRECISION=st.meta["PRECISION"])
    grad = torch.empty(B, C, n, device=z.device, dtype=st.ct)
    loss = torch.empty(B, device=z.device, dtype=st.ct)
    a = torch.empty(B, C, device=z.device, dtype=st.ct)
    grid = lambda meta: (triton.cdiv(B, meta["BLOCK_B"]), triton.cdiv(C, meta["BLOCK_C"]))  # noqa: E731
    fwd_kernel[grid](st.zs_op, st.keys, st.k_rnorm.reshape(S), st.ph_op, st.p_rnorm.reshape(-1), vT, st.sigma, st.tau,
                     lse, st.m, st.ce, grad, loss, a, B, S, C, n, **st.consts, **st.meta)
    return grad, loss, lse, a, st.saved()


def later_step_bwd(dgrad, dloss, z, keys, values, phi, tau, grad, inner_loss, lse, a, saved, gamma: float,
                   entry_dropout: float = 0.0, seed=None):
    """dgrad (B,C,n), dloss (B,) in the compute dtype; the rest as the forward's inputs and outputs.
    Returns (dz (B,n), dkeys (S,n), dvalues (S,C), dphi (B,C,n), dtau 0-d), each in its input's dtype."""
    st = LaterSetup(z, keys, values, phi, tau, gamma, entry_dropout, seed, saved=saved)
    B, S, C, n, ct = st.B, st.S, st.C, st.n, st.ct
    vT = st.vT.contiguous()
    dg, g = dgrad.to(ct).contiguous(), grad.to(ct)
    dL = dloss.to(ct).contiguous()
    hw, D, dphi_proj = projection_bwd_per_example(dg, g, dL, inner_loss.to(ct), st.ph_op.to(ct).view(B, C, n),
                                                  st.p_rnorm.view(B, C, 1), a.to(ct))
    del g

    rdot = torch.empty(B, S, device=z.device, dtype=ct)
    vx = torch.empty_like(rdot)
    grid = lambda meta: (triton.cdiv(B, meta["BLOCK_B"]), triton.cdiv(S, meta["BLOCK_S"]))  # noqa: E731
    bwd_stats_kernel[grid](st.ph_op, st.keys, st.k_rnorm.reshape(S), vT, st.tau, st.m, dg, hw, st.p_rnorm.reshape(-1),
                           rdot, vx, B, S, C, n, s_bucket=st.consts["s_bucket"], BLOCK_N=st.block_n,
                           PRECISION=st.meta["PRECISION"])
    dph = torch.empty(B, C, n, device=z.device, dtype=ct)
    dzh = torch.empty(B, n, device=z.device, dtype=ct)
    grid = lambda meta: (triton.cdiv(B, meta["BLOCK_B"]), triton.cdiv(C, meta["BLOCK_C"]))  # noqa: E731
    common = (st.zs_op, st.keys, st.k_rnorm.reshape(S), st.ph_op, vT, st.sigma, st.tau, lse.to(ct), st.m, st.ce, dg, hw,
              st.p_rnorm.reshape(-1), rdot, vx, dL, D)
    bwd_query_kernel[grid](*common, dph, dzh, B, S, C, n, **st.consts, **st.meta)
    # P programs own contiguous groups of entry tiles (as step 1's backward); 3 in the interpreter, so that the
    # tests exercise multi-tile programs and the partial sums.
    target = multiprocessors(z.device) or 3
    tiles = triton.cdiv(S, max(config.kwargs["BLOCK_S"] for config in bwd_entry_kernel.configs))
    programs = triton.cdiv(tiles, triton.cdiv(tiles, target))
    dkh = torch.empty(S, n, device=z.device, dtype=ct)
    dvT = torch.empty(C, S, device=z.device, dtype=ct)
    dtau_part = torch.empty(programs, device=z.device, dtype=ct)
    bwd_entry_kernel[(programs,)](*common, dkh, dvT, dtau_part, B, S, C, n, **st.consts, **st.meta)

    dz = rows_bwd(dzh[None], z, st.z_rnorm).mul_(st.gamma)
    dkeys = rows_bwd(dkh[None], st.keys, st.k_rnorm)
    dphi = rows_bwd(dph.view(1, B * C, n), phi.reshape(B * C, n), st.p_rnorm, extra=dphi_proj.view(B * C, n))
    dphi = dphi.view(B, C, n)
    dt = z.dtype
    return dz.to(dt), dkeys.to(dt), dvT.t().to(dt), dphi.to(dt), dtau_part.sum().reshape(tau.shape).to(dt)
