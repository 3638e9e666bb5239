"""A training step of the head makes no host synchronisation: nothing reads a device value back to Python
(`aten::_local_scalar_dense`, what `.item()`, `int(t)`, `bool(t)` and data-dependent shapes run), on any backend,
with entry dropout drawing a fresh seed per step (value checks off: they read data back by design). On a GPU such
a read stalls the host until the queued work is done; a step without one can also be captured in a CUDA graph."""
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import mn

from helpers import make_inputs

BACKENDS = ["autograd", "torch", "native", "triton"]
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


class HostReads(TorchDispatchMode):
    """Counts the ops that read a tensor's value back to the host."""

    READS = ("aten::_local_scalar_dense", "aten::item", "aten::is_nonzero", "aten::equal", "aten::nonzero")

    def __init__(self):
        super().__init__()
        self.reads = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func._schema.name in self.READS:
            self.reads.append(func._schema.name)
        return func(*args, **(kwargs or {}))


@pytest.fixture
def checks_off():
    previous = mn.set_value_checks(False)
    yield
    mn.set_value_checks(previous)


@pytest.mark.parametrize("inner_steps", [1, 2])
@pytest.mark.parametrize("backend", BACKENDS)
def test_head_training_step_reads_nothing_back(backend, inner_steps, checks_off):
    if mn.available_backends(DEVICE)[backend] is not None:
        pytest.skip(f"{backend}: {mn.available_backends(DEVICE)[backend]}")
    torch.manual_seed(0)
    head = mn.MetaNeighborhoodsHead(8, 3, num_entries=20, backend=backend, entry_dropout=0.5, inner_lr="feature",
                                    inner_steps=inner_steps).to(DEVICE)
    z = torch.randn(4, 8, device=DEVICE, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0], device=DEVICE)
    with HostReads() as meter:
        F.cross_entropy(head(z), y).backward()
    assert meter.reads == [], f"{backend}: {meter.reads}"


def test_the_meter_sees_a_host_read():
    with HostReads() as meter:
        int(torch.randint(0, 5, ()))
    assert meter.reads == ["aten::_local_scalar_dense"]


@pytest.mark.parametrize("seed", [12345, 2**31 + 5, 2**32 + 12345])
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_seed_tensor_draws_the_int_seeds_mask(backend, seed):
    """seed as a one-integer tensor (on the device, as a CUDA graph needs it) is the same seed as the int, past
    2^31 too (both taken modulo 2^32)."""
    if mn.available_backends("cpu")[backend] is not None:
        pytest.skip(f"{backend}: {mn.available_backends('cpu')[backend]}")
    inputs = make_inputs(3, 17, 4, 5, seed=1)
    by_int = mn.inner_gradient(*inputs, gamma=3.0, entry_dropout=0.5, seed=seed, backend=backend)
    by_tensor = mn.inner_gradient(*inputs, gamma=3.0, entry_dropout=0.5, seed=torch.tensor(seed), backend=backend)
    other = mn.inner_gradient(*inputs, gamma=3.0, entry_dropout=0.5, seed=torch.tensor(seed + 1), backend=backend)
    for a, b in zip(by_int, by_tensor, strict=True):
        assert torch.equal(a, b)                       # one path, one mask
    assert not torch.equal(by_int[1], other[1])


def test_a_drawn_seed_replays_under_manual_seed():
    inputs = make_inputs(3, 17, 4, 5, seed=1)
    runs = []
    for _ in range(2):
        torch.manual_seed(7)
        runs.append(mn.inner_gradient(*inputs, gamma=3.0, entry_dropout=0.5, backend="torch")[1])
    assert torch.equal(*runs)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_cuda_graph_of_the_head_replays_the_eager_step(backend):
    """The README's recipe: value checks off, torch.cuda.make_graphed_callables on the head. Without dropout a
    replay equals the eager step (same kernels, same order); with dropout each replay draws a new seed."""
    previous = mn.set_value_checks(False)
    try:
        torch.manual_seed(0)
        head = mn.MetaNeighborhoodsHead(64, 10, num_entries=500, backend=backend).cuda()
        z = torch.randn(32, 64, device="cuda", requires_grad=True)
        y = torch.randint(0, 10, (32,), device="cuda")
        eager = head(z)
        eager_grads = torch.autograd.grad(F.cross_entropy(eager, y), [z, *head.parameters()])
        graphed = torch.cuda.make_graphed_callables(head, (z,))
        for _ in range(2):                                     # replays, not just the capture run
            out = graphed(z)
            grads = torch.autograd.grad(F.cross_entropy(out, y), [z, *head.parameters()])
        torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-6)
        for a, b in zip(grads, eager_grads, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)

        dropped = mn.MetaNeighborhoodsHead(64, 10, num_entries=500, backend=backend, entry_dropout=0.5).cuda()
        graphed = torch.cuda.make_graphed_callables(dropped, (z,))
        first, second = graphed(z).detach().clone(), graphed(z).detach().clone()
        assert not torch.equal(first, second), "each replay draws its own dropout seed"
    finally:
        mn.set_value_checks(previous)
