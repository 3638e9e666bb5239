"""Memory of a head step counted on the CPU, by allocation accounting: for bench/step_memory.py and the
memory-budget test (tests/test_triton_memory.py). Linux / glibc only.

glibc's mallinfo2 (bytes in use, mmapped blocks included) is read after every PyTorch op of the step (a
TorchDispatchMode), the ops inside mn's own custom ops included; the peak minus the bytes in use before the step
is the step's extra memory. Op granularity: a buffer that lives only inside one op (a kernel's scratch) is not
seen. `KernelsSkipped` makes the Triton launchers launch nothing and size their grids for a GPU, so that a
GPU-sized step's torch-level allocations -- all the memory it takes on a GPU -- can be counted in seconds.
"""
from __future__ import annotations

import ctypes
import gc

import torch
import torch.nn.functional as F
from torch._library import custom_ops
from torch.utils._python_dispatch import TorchDispatchMode


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]


_LIBC = ctypes.CDLL("libc.so.6")
_LIBC.mallinfo2.restype = _MallInfo2


def bytes_in_use() -> int:
    info = _LIBC.mallinfo2()
    return info.hblkhd + info.uordblks


class PeakMemory(TorchDispatchMode):
    """Highest bytes_in_use() seen after any op run inside it, the ops inside mn's own custom ops included:
    their Python bodies (the kernel launchers with their torch glue) run under this mode too, so a temporary
    of the fused backward is seen as it would be on a GPU, where kernels allocate nothing themselves."""

    def __init__(self):
        super().__init__()
        self.peak, self.peak_op = 0, None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        # torch.library keeps each custom op's Python function as `_init_fn` of its definition.
        op = custom_ops.OPDEFS.get(func._schema.name) if func._schema.name.startswith("mn::") else None
        if op is not None:
            with self:
                out = op._init_fn(*args, **(kwargs or {}))
        else:
            out = func(*args, **(kwargs or {}))
        if bytes_in_use() > self.peak:
            self.peak, self.peak_op = bytes_in_use(), func._schema.name
        return out


def step_peak_mib(logits_fn, backend, B, S, C, n) -> tuple[float, str]:
    """(peak MiB above the bytes in use before the step, the op after which it was reached) of one training step
    of the head's logits `logits_fn(z, keys, values, weight, tau, alpha, gamma=5.0, backend=backend)`, float32."""
    torch.manual_seed(0)
    z = torch.randn(B, n, requires_grad=True)
    keys = (0.1 * torch.randn(S, n)).requires_grad_()
    values = torch.softmax(torch.randn(S, C), dim=1).requires_grad_()
    weight = (torch.randn(C, n) / n ** 0.5).requires_grad_()
    tau, alpha = torch.tensor(10.0, requires_grad=True), torch.tensor(0.05, requires_grad=True)
    target = torch.randint(0, C, (B,))

    def step():
        logits = logits_fn(z, keys, values, weight, tau, alpha, gamma=5.0, backend=backend)
        F.cross_entropy(logits, target).backward()

    step()                                     # warm-up: first-call allocations, .grad buffers
    # The warm-up's cyclic garbage is collected now, not by a collection inside the measured step, where its
    # freed bytes would hide as much of the step's own (about 1 MiB here, depending on the collector's timing).
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        base = bytes_in_use()
        with PeakMemory() as meter:
            step()
    finally:
        if was_enabled:
            gc.enable()
    return (meter.peak - base) / 2**20, meter.peak_op


class KernelsSkipped:
    """Within it, the Triton kernels launch nothing and the launchers size their grids for a GPU with `sms`
    SMs (132: an H100 SXM): their torch-level allocations -- all the memory a step takes on a GPU, where
    kernels allocate none -- can then be counted at full size, e.g. S = 10^4, which the interpreter would
    take hours to run. Outputs are garbage; only the bytes are measured."""

    def __init__(self, sms: int = 132):
        self.sms = sms

    # (launcher module, its kernels) of every Triton op
    KERNELS = (("mn_kernels.inner_gradient.launch", ("lse_kernel", "fwd_kernel", "bwd_kernel", "entry_fwd_kernel",
                                                     "entry_bwd_kernel")),
               ("mn_kernels.later_step.launch", ("stats_kernel", "fwd_kernel", "bwd_stats_kernel",
                                                 "bwd_query_kernel", "bwd_entry_kernel")),
               ("mn_kernels.rows", ("normalize_rows_kernel", "rows_bwd_kernel")))

    def __enter__(self):
        import importlib
        self.saved = []
        for module_name, kernels in self.KERNELS:
            module = importlib.import_module(module_name)
            for name in (*kernels, "multiprocessors"):
                if hasattr(module, name):
                    self.saved.append((module, name, getattr(module, name)))
            for name in kernels:
                setattr(module, name, _NoLaunch(getattr(getattr(module, name), "gpu_configs", None)))
            if hasattr(module, "multiprocessors"):
                module.multiprocessors = lambda device: self.sms
        return self

    def __exit__(self, *exc):
        for module, name, value in self.saved:
            setattr(module, name, value)


class _NoLaunch:
    def __init__(self, configs):
        self.configs = configs          # the GPU's: the launcher sizes the backward's grid by their BLOCK_S

    def __getitem__(self, grid):
        return lambda *args, **kwargs: None
