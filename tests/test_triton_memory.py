"""The Triton step's memory at a GPU-like size, counted on the CPU by mn.memory_accounting: with the kernels
skipped and grids sized for 132 SMs, every torch-level allocation of one head step (what a GPU would hold; the
kernels allocate nothing) stays within the budget of its design -- no B x C x n temporary beyond dg and the
forward's grad, no normalised copy of the dictionary. The start-of-work code took 28.6 MiB here."""
import ctypes.util
import sys

import pytest
import torch  # noqa: E402

pytest.importorskip("triton")
if not ctypes.util.find_library("c") or sys.platform != "linux":
    pytest.skip("allocation accounting reads glibc's mallinfo2", allow_module_level=True)
if torch.cuda.is_available():   # the launchers would size grids and skip kernels for the GPU the tests use
    pytest.skip("CPU accounting of GPU sizes: for machines without a GPU", allow_module_level=True)

import mn  # noqa: E402
from mn.memory_accounting import KernelsSkipped, step_peak_mib  # noqa: E402


def test_step_memory_stays_within_its_budget():
    B, S, C, n = 64, 4096, 64, 128
    mib = 4 / 2**20
    unit, dictionary, per_entry = B * C * n * mib, S * n * mib, C * S * mib     # 2, 2 and 1 MiB
    partials = 64 * B * n * mib                      # 64 tiles of 64 entries -> 64 programs' dzh partials
    # dg and grad, dkh, the partials, three C x S arrays, 1.5 MiB of small ones: 12.5 MiB. One more B x C x n or
    # S x n array (2 MiB each here) breaks it.
    budget = 2 * unit + dictionary + partials + 3 * per_entry + 1.5
    with KernelsSkipped():
        peak, where = step_peak_mib(mn.adapted_logits, "triton", B, S, C, n)
    assert peak <= budget, f"{peak:.1f} MiB (peak after {where}) > {budget:.1f} MiB"


def test_later_step_memory_stays_within_its_budget():
    """Three inner steps: the later steps add their B x S statistics (m, ce; rdot, vX) and B x C x n terms, nothing
    of size B x S x C (here 64 MiB) or S x C x n. B x C x n: autograd keeps phi_1, phi_2 and the three grads (5),
    the later ops their normalised phi (2), and the backward forms dg, the projection term, dphh, dphi and the
    inner rate's product (5): 12."""
    B, S, C, n = 64, 4096, 64, 128
    mib = 4 / 2**20
    unit, dictionary, per_entry, bs = B * C * n * mib, S * n * mib, C * S * mib, B * S * mib    # 2, 2, 1, 1 MiB
    one_step = 2 * unit + dictionary + 64 * B * n * mib + 3 * per_entry + 1.5
    budget = one_step + 4 * bs + 12 * unit
    with KernelsSkipped():
        peak, where = step_peak_mib(lambda *a, **kw: mn.adapted_logits(*a, inner_steps=3, **kw), "triton", B, S, C, n)
    assert peak <= budget, f"{peak:.1f} MiB (peak after {where}) > {budget:.1f} MiB"     # < one B x S x C array
