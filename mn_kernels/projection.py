"""The projection of the cosine classifier's gradient, grad_ic = P_c U_ic with P_c = (I - wh_c wh_c^T) / ||w_c||,
and the host-side part of its backward (docs/design.md, "Backward", step 1)."""
import torch


def project(x, wh, w_rnorm, along=None):
    """P_c x_ic for x (B, C, n), in place: (x - wh_c (wh_c . x_ic)) / ||w_c||. `along` (B, C) is wh_c . x_ic
    when the caller has it already."""
    if along is None:
        along = torch.einsum("bcn,cn->bc", x, wh)
    return x.sub_(along[..., None] * wh).mul_(w_rnorm)


def projection_bwd(dg, g, dL, inner_loss, wh, w_rnorm, a):
    """What the backward needs from dg (B, C, n) before the contraction kernels, all in the compute dtype:

    hw (B, C)    wh_c . dg_ic, so that the kernels form dU_ic = P_c dg_ic tile by tile
    D (B,)       sum_j w_ij dw_ij = <grad_i, dg_i> + dL_i loss_i   (P_c is symmetric)
    dW (C, n)    the P_c term of dweight: -(1/||w_c||) sum_i [(dg_ic . g_ic) wh_c + hw_ic g_ic + a_ic dU_ic],
                 with sum_i a_ic dU_ic = (sum_i a_ic dg_ic - (sum_i a_ic hw_ic) wh_c) / ||w_c||

    g = grad (B, C, n), a (B, C) = wh_c . U_ic from the forward. No B x C x n temporary: every contraction over
    the batch is one einsum."""
    B, C, n = dg.shape
    hw = torch.einsum("bcn,cn->bc", dg, wh).contiguous()
    hg = torch.einsum("rk,rk->r", dg.reshape(-1, n), g.reshape(-1, n)).view(B, C)
    D = hg.sum(1) + dL * inner_loss
    dW = -w_rnorm * (hg.sum(0)[:, None] * wh + torch.einsum("bc,bcn->cn", hw, g)
                     + w_rnorm * (torch.einsum("bc,bcn->cn", a, dg) - (a * hw).sum(0)[:, None] * wh))
    return hw, D.contiguous(), dW


def projection_bwd_per_example(dg, g, dL, inner_loss, ph, rnorm, a):
    """`projection_bwd` for per-example weights (the later inner steps): ph (B, C, n) the normalised weights,
    rnorm (B, C, 1) their reciprocal norms, a (B, C) = ph_ic . U_ic. Returns hw (B, C) = ph_ic . dg_ic, D (B,),
    and the projection's own term of dphi (B, C, n), -[(dg . g) ph + hw g + a dU] / ||phi|| with
    dU = (dg - hw ph) / ||phi||, per example (nothing is summed over the batch)."""
    hw = torch.einsum("bcn,bcn->bc", ph, dg)
    hg = torch.einsum("bcn,bcn->bc", dg, g)
    D = hg.sum(1) + dL * inner_loss
    au = (a * rnorm[..., 0])[..., None]
    dW = (hg[..., None] * ph).add_(hw[..., None] * g).add_(au * dg).sub_(au * hw[..., None] * ph).mul_(-rnorm)
    return hw.contiguous(), D.contiguous(), dW
