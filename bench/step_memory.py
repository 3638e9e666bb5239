"""Peak memory of one head training step above its inputs, on CPU, per backend: `mn.adapted_logits` (logits
in closed form from the last step's gradient) against the explicit form it replaced (tau * cos(z, phi) with
phi = `mn.adapted_weights(...)` materialised, normalised and kept for the backward), both in the same run.

Measured by allocation accounting: glibc's mallinfo2 (bytes in use, mmapped blocks included) read after every
PyTorch op of the step (a TorchDispatchMode), the peak minus the bytes in use before the step. Op granularity:
a buffer that lives only inside one op (a kernel's scratch) is not seen. Linux / glibc only.

    python bench/step_memory.py [--config 128,64,100,256] [--backends torch native triton] [--out FILE.md]

`triton` runs through the Triton interpreter here (slow: keep S small). The GPU number of the issue target
(extra memory at 128,10000,100,256) is bench_gpu.py's peak MiB column.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import os
import platform

os.environ.setdefault("TRITON_INTERPRET", "1")
import torch
import torch.nn.functional as F
from torch._library import custom_ops
from torch.utils._python_dispatch import TorchDispatchMode

import mn
from mn_kernels.rownorm import normalize


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


def explicit_logits(z, keys, values, weight, tau, alpha, **kw):
    """The previous formulation: the stepped weights phi (B, C, n) materialised and normalised."""
    phi = mn.adapted_weights(z, keys, values, weight, tau, alpha, **kw)
    return tau * torch.einsum("bn,bcn->bc", normalize(z), normalize(phi))


def step_peak_mib(logits_fn, backend, B, S, C, n) -> tuple[float, str]:
    """(peak MiB above the bytes in use before the step, the op after which it was reached)."""
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
    base = bytes_in_use()
    with PeakMemory() as meter:
        step()
    return (meter.peak - base) / 2**20, meter.peak_op


class KernelsSkipped:
    """Within it, the Triton kernels launch nothing and the launchers size their grids for a GPU with `sms`
    SMs (132: an H100 SXM): their torch-level allocations -- all the memory a step takes on a GPU, where
    kernels allocate none -- can then be counted at full size, e.g. S = 10^4, which the interpreter would
    take hours to run. Outputs are garbage; only the bytes are measured."""

    def __init__(self, sms: int = 132):
        self.sms = sms

    def __enter__(self):
        import mn_kernels.inner_gradient.launch as kernels
        self.saved = {name: getattr(kernels, name)
                      for name in ("lse_kernel", "fwd_kernel", "bwd_kernel", "multiprocessors")}
        for name in ("lse_kernel", "fwd_kernel", "bwd_kernel"):
            setattr(kernels, name, _NoLaunch(self.saved[name].gpu_configs))
        kernels.multiprocessors = lambda device: self.sms
        return self

    def __exit__(self, *exc):
        import mn_kernels.inner_gradient.launch as kernels
        for name, kernel in self.saved.items():
            setattr(kernels, name, kernel)


class _NoLaunch:
    def __init__(self, configs):
        self.configs = configs          # the GPU's: the launcher sizes the backward's grid by their BLOCK_S

    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="128,64,100,256", help="B,S,C,n")
    parser.add_argument("--backends", nargs="+", default=["torch", "native", "triton"])
    parser.add_argument("--out", help="also write the table to this file")
    parser.add_argument("--skip-kernels", action="store_true", help="triton only: count the launchers' torch "
                        "allocations with no kernel run (see KernelsSkipped), for GPU-sized configs")
    args = parser.parse_args(argv)
    B, S, C, n = (int(v) for v in args.config.split(","))
    unit = B * C * n * 4 / 2**20
    lines = [f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
             f"- machine: {platform.machine()}, {os.cpu_count()} cores; python {platform.python_version()}, "
             f"torch {torch.__version__}; float32; one B x C x n tensor = {unit:.1f} MiB", "",
             "| B,S,C,n | backend | explicit phi MiB | closed form MiB | saved | closed form peaks after |",
             "| --- | --- | --- | --- | --- | --- |"]
    for backend in args.backends:
        skip = args.skip_kernels and backend == "triton"
        with KernelsSkipped() if skip else contextlib.nullcontext():
            before, _ = step_peak_mib(explicit_logits, backend, B, S, C, n)
            after, where = step_peak_mib(mn.adapted_logits, backend, B, S, C, n)
        lines.append(f"| {args.config} | {backend}{' (kernels skipped)' if skip else ''} | {before:.1f} "
                     f"({before / unit:.1f} x) | {after:.1f} ({after / unit:.1f} x) | {before - after:.1f} MiB "
                     f"| {where} |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
