import os

import pytest
import torch

# Without a GPU the Triton kernels run in Triton's CPU interpreter. Triton reads this when a kernel is
# defined, so it is set here, before any test imports mn_kernels.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def make_inputs(B, S, C, n, *, dtype=torch.float64, seed=0, requires_grad=False, device="cpu"):
    """Random operands of inner_gradient: z (B,n), keys (S,n), values (S,C) probabilities, weight (C,n), tau."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, n, generator=g, dtype=torch.float64)
    keys = torch.randn(S, n, generator=g, dtype=torch.float64)
    values = torch.softmax(2 * torch.randn(S, C, generator=g, dtype=torch.float64), dim=1)
    weight = torch.randn(C, n, generator=g, dtype=torch.float64)
    tau = torch.tensor(3.0, dtype=torch.float64)
    out = [t.to(device=device, dtype=dtype) for t in (z, keys, values, weight, tau)]
    return [t.requires_grad_(requires_grad) for t in out]


def shape_id(shape):
    return "B{}-S{}-C{}-n{}".format(*shape)


NAMES = ["grad", "inner_loss", "dz", "dkeys", "dvalues", "dweight", "dtau"]   # what outputs_and_grads returns


def cotangents(B, C, n, dtype=torch.float64, device="cpu"):
    """Fixed random cotangents (dgrad (B,C,n), dloss (B,)) for comparing backwards."""
    g = torch.Generator().manual_seed(1)
    return (torch.randn(B, C, n, generator=g, dtype=dtype).to(device),
            torch.randn(B, generator=g, dtype=dtype).to(device))


def outputs_and_grads(inputs, backend, cot, **kw):
    """[grad, inner_loss, dz, dkeys, dvalues, dweight, dtau] of mn.inner_gradient on `backend` (see NAMES)."""
    import mn
    grad, loss = mn.inner_gradient(*inputs, backend=backend, **kw)
    dins = torch.autograd.grad((grad * cot[0]).sum() + (loss * cot[1]).sum(), inputs)
    return [grad, loss, *dins]


def scaled_error(a, b):
    """max |a - b| relative to max |b|: one number per output, robust to entries near zero."""
    return ((a.double() - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()

