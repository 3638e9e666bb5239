"""Logits of the cosine classifier after an inner step, tau * cos(z_i, phi_c - alpha grad_ic), with a hand-written
backward: the last op of `mn.adapted_logits`.

With hats for row-normalised vectors and u = alpha * grad (u = grad and a = alpha for a scalar alpha, else a = 1),
each logit is a ratio of contractions over n, so the stepped weights (B x C x n) are never formed::

    N_ic = zh_i . phi_c - a zh_i . u_ic        M_ic = ||phi_c||^2 - 2 a phi_c . u_ic + a^2 ||u_ic||^2
    logit_ic = tau N_ic / sqrt(max(M_ic, eps^2))

Backward, given r = dlogit (B x C), with dN = r tau / sqrt(M) and dM = -r logit / (2 M) (0 where M is clamped)::

    dzh_i  = sum_c dN_ic (phi_c - a u_ic)
    du_ic  = -a dN_ic zh_i + 2 a dM_ic (a u_ic - phi_c)                       (one B x C x n array)
    dphi_c = sum_i [dN_ic zh_i + 2 dM_ic (phi_c - a u_ic)]    (summed over i only for a shared phi)
    da     = -sum_ic [dN_ic zh_i . u_ic + 2 dM_ic (phi_c . u_ic - a ||u_ic||^2)]  (scalar alpha)
    dtau   = sum_ic r_ic N_ic / sqrt(M_ic)

Autograd through the contractions would instead add up three B x C x n gradients for u: this backward
allocates one, the largest array of a training step's logits backward (bench/results/cpu-step-memory.md).
A backward that must itself be differentiable (`create_graph=True`) differentiates the forward's contractions
with autograd instead, from the saved inputs, so that gradients of gradients are exact.
"""
from __future__ import annotations

import torch

from mn_kernels.rownorm import EPS, normalize_rows, normalize_rows_bwd

from .grad_mode import without_autocast


def _contractions(z, phi, grad, alpha):
    """The terms of the module docstring: (zh, 1 / max(||z||, eps), whether that clamp is active, a, zh . u,
    phi . u, ||u||^2, M, 1 / sqrt(max(M, eps^2)), cos) with cos (B, C) = N / sqrt(max(M, eps^2))."""
    scalar = alpha.numel() == 1
    zh, rnorm, clamped = normalize_rows(z)
    u = grad if scalar else alpha * grad
    a = alpha.reshape(()) if scalar else torch.ones((), dtype=z.dtype, device=z.device)
    shared = phi.dim() == 2
    z_phi = zh @ phi.T if shared else torch.einsum("bn,bcn->bc", zh, phi)
    phi_phi = torch.einsum("...n,...n->...", phi, phi)                            # (C,) or (B, C)
    z_u = torch.einsum("bn,bcn->bc", zh, u)
    phi_u = torch.einsum("cn,bcn->bc" if shared else "bcn,bcn->bc", phi, u)
    u_u = torch.einsum("bcn,bcn->bc", u, u)
    m = phi_phi - 2 * a * phi_u + a * a * u_u
    rq = m.clamp_min(EPS * EPS).rsqrt()                                           # 1 / sqrt(max(M, eps^2))
    cos = (z_phi - a * z_u) * rq
    return zh, rnorm, clamped, a, z_u, phi_u, u_u, m, rq, cos


class _StepLogits(torch.autograd.Function):
    """z (B, n), phi (C, n) or (B, C, n), grad (B, C, n), alpha of shape (), (1,), (n,) or (C, n), tau of one
    element -> logits (B, C). Differentiable twice: a `create_graph` backward goes through autograd."""

    @staticmethod
    def forward(ctx, z, phi, grad, alpha, tau):
        # In the inputs' dtype even under autocast, so that the backward's products meet the saved tensors'
        # dtypes (the fused ops before it are not autocast either).
        with without_autocast(z.device):
            return _StepLogits._forward(ctx, z, phi, grad, alpha, tau)

    @staticmethod
    def _forward(ctx, z, phi, grad, alpha, tau):
        terms = _contractions(z, phi, grad, alpha)
        ctx.save_for_backward(z, phi, grad, alpha, tau, *terms)
        return tau.reshape(()) * terms[-1]

    @staticmethod
    def backward(ctx, r):
        with without_autocast(r.device):
            r = r.to(ctx.saved_tensors[0].dtype)
            if torch.is_grad_enabled():     # create_graph: the backward itself is differentiated
                return _StepLogits._backward_differentiable(ctx, r)
            return _StepLogits._backward(ctx, r)

    @staticmethod
    def _backward_differentiable(ctx, r):
        """The vector-Jacobian product by autograd through the forward's contractions, recomputed from the saved
        inputs so that the graph reaches them (the hand-written backward's saved terms are constants). Each input
        enters through a fresh view: grad may depend on z, phi and tau, and the partial derivatives must not
        follow that dependence (the outer graph adds it through dgrad)."""
        inputs = [x.view_as(x) for x in ctx.saved_tensors[:5]]
        wanted = [x for x, need in zip(inputs, ctx.needs_input_grad) if need]
        logits = inputs[4].reshape(()) * _contractions(*inputs[:4])[-1]
        grads = iter(torch.autograd.grad(logits, wanted, r, create_graph=True, allow_unused=True))
        return tuple(next(grads) if need else None for need in ctx.needs_input_grad)

    @staticmethod
    def _backward(ctx, r):
        z, phi, grad, alpha, tau, zh, rnorm, clamped, a, z_u, phi_u, u_u, m, rq, cos = ctx.saved_tensors
        need_z, need_phi, need_grad, need_alpha, need_tau = ctx.needs_input_grad
        scalar, shared = alpha.numel() == 1, phi.dim() == 2
        t = tau.reshape(())
        dn = r * t * rq                                                           # dL / dN
        dm = torch.where(m >= EPS * EPS, -0.5 * r * t * cos * rq * rq, 0.0)       # dL / dM
        # u: grad itself for a scalar alpha; for a vector alpha formed once, in the array that becomes du.
        u = grad if scalar else grad * alpha
        dz = dphi = dgrad = dalpha = dtau = None
        if need_z:
            dzh = (dn @ phi if shared else torch.einsum("bc,bcn->bn", dn, phi)) - a * torch.einsum("bc,bcn->bn", dn, u)
            dz = normalize_rows_bwd(z, rnorm, clamped, dzh)
        if need_phi:
            if shared:
                dphi = dn.T @ zh + 2 * dm.sum(0)[:, None] * phi - 2 * a * torch.einsum("bc,bcn->cn", dm, u)
            else:
                dphi = torch.mul(u, (-2 * a * dm)[..., None]).addcmul_(phi, (2 * dm)[..., None])
                dphi.addcmul_(zh[:, None, :], dn[..., None])
        if need_grad or (need_alpha and not scalar):
            # du = 2 a^2 dM u - a dN zh - 2 a dM phi in one B x C x n array (u's own for a vector alpha).
            du = torch.mul(u, (2 * a * a * dm)[..., None]) if scalar else u.mul_((2 * dm)[..., None])
            du.addcmul_(zh[:, None, :], (-a * dn)[..., None]).addcmul_((2 * a * dm)[..., None], phi, value=-1)
            if need_alpha and not scalar:              # u = alpha grad: sum du * grad over alpha's broadcast
                dalpha = (du * grad).sum_to_size(alpha.shape)
            if need_grad:
                dgrad = du if scalar else du.mul_(alpha)
        if need_alpha and scalar:
            dalpha = (-(dn * z_u).sum() - 2 * (dm * (phi_u - a * u_u)).sum()).reshape(alpha.shape)
        if need_tau:
            dtau = (r * cos).sum().reshape(tau.shape)
        return dz, dphi, dgrad, dalpha, dtau


def cosine_logits_after_step(z: torch.Tensor, phi: torch.Tensor, grad: torch.Tensor, alpha: torch.Tensor,
                             tau: torch.Tensor) -> torch.Tensor:
    """tau * cos(z_i, phi_c - alpha grad_ic) (B, C) without materialising the stepped weights (B, C, n).

    Exact algebra (the module docstring); in floating point it loses relative precision only when
    ||phi - alpha grad|| is far below ||phi|| (a step that nearly cancels the weight). The norm is clamped at
    eps like `normalize`. z (B, n); phi (C, n) or (B, C, n); grad (B, C, n); alpha and tau: tensors, alpha
    of shape (), (1,), (n,) or (C, n), tau of one element. Differentiable to any order.
    """
    return _StepLogits.apply(z, phi, grad, alpha, tau)
