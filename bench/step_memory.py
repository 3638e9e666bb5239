"""Peak memory of one head training step above its inputs, on CPU, per backend: `mn.adapted_logits` (logits
in closed form from the last step's gradient) against the explicit form it replaced (tau * cos(z, phi) with
phi = `mn.adapted_weights(...)` materialised, normalised and kept for the backward), both in the same run.

Measured by allocation accounting (mn/memory_accounting.py): the peak of the bytes in use after every PyTorch op of
the step, minus the bytes in use before it. Linux / glibc only.

    python bench/step_memory.py [--config 128,64,100,256] [--backends torch native triton] [--out FILE.md]

`triton` runs through the Triton interpreter here (slow: keep S small). The GPU number of the issue target
(extra memory at 128,10000,100,256) is bench_gpu.py's peak MiB column.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform

os.environ.setdefault("TRITON_INTERPRET", "1")
import torch  # noqa: E402

import mn  # noqa: E402
from mn.memory_accounting import KernelsSkipped, step_peak_mib  # noqa: E402
from mn_kernels.rownorm import normalize  # noqa: E402


def explicit_logits(z, keys, values, weight, tau, alpha, **kw):
    """The previous formulation: the stepped weights phi (B, C, n) materialised and normalised."""
    phi = mn.adapted_weights(z, keys, values, weight, tau, alpha, **kw)
    return tau * torch.einsum("bn,bcn->bc", normalize(z), normalize(phi))


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
