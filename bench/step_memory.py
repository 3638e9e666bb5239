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
import ctypes
import datetime
import os
import platform

os.environ.setdefault("TRITON_INTERPRET", "1")
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import mn
from mn.reference._common import normalize


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]


_LIBC = ctypes.CDLL("libc.so.6")
_LIBC.mallinfo2.restype = _MallInfo2


def bytes_in_use() -> int:
    info = _LIBC.mallinfo2()
    return info.hblkhd + info.uordblks


class PeakMemory(TorchDispatchMode):
    """Highest bytes_in_use() seen after any op run inside it."""

    def __init__(self):
        super().__init__()
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.peak = max(self.peak, bytes_in_use())
        return out


def explicit_logits(z, keys, values, weight, tau, alpha, **kw):
    """The previous formulation: the stepped weights phi (B, C, n) materialised and normalised."""
    phi = mn.adapted_weights(z, keys, values, weight, tau, alpha, **kw)
    return tau * torch.einsum("bn,bcn->bc", normalize(z), normalize(phi))


def step_peak_mib(logits_fn, backend, B, S, C, n) -> float:
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
    return (meter.peak - base) / 2**20


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="128,64,100,256", help="B,S,C,n")
    parser.add_argument("--backends", nargs="+", default=["torch", "native", "triton"])
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args(argv)
    B, S, C, n = (int(v) for v in args.config.split(","))
    unit = B * C * n * 4 / 2**20
    lines = [f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
             f"- machine: {platform.machine()}, {os.cpu_count()} cores; python {platform.python_version()}, "
             f"torch {torch.__version__}; float32; one B x C x n tensor = {unit:.1f} MiB", "",
             f"| B,S,C,n | backend | explicit phi MiB | closed form MiB | saved |", "| --- | --- | --- | --- | --- |"]
    for backend in args.backends:
        before = step_peak_mib(explicit_logits, backend, B, S, C, n)
        after = step_peak_mib(mn.adapted_logits, backend, B, S, C, n)
        lines.append(f"| {args.config} | {backend} | {before:.1f} ({before / unit:.1f} x) | {after:.1f} "
                     f"({after / unit:.1f} x) | {before - after:.1f} MiB |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
