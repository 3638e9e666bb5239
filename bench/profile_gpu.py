"""Where the Triton head step's time goes, kernel by kernel: which kernel to restructure first when the step
misses its target (docs/design.md, "Performance contract"; the measured gap: bench/results/).

For one config and input dtype: the chosen autotune config of each Triton kernel with its compiled resources
(registers per thread, spilled bytes, shared memory, warps), then a torch.profiler table of every device
kernel of the step (Triton and the surrounding torch ops) sorted by time, with its share of the step.

    python bench/profile_gpu.py [--config 128,10000,100,256] [--dtype float32 [bfloat16]] [--out FILE.md]

Without a GPU it runs on the CPU through Triton's interpreter (a dry run: tiny configs, CPU op times only,
no compiled-kernel resources) -- how bench/gpu_check.sh is checked before it spends GPU time.
"""
from __future__ import annotations

import argparse
import os

import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")
import torch.nn.functional as F
from bench_gpu import make_head_inputs
from torch.profiler import ProfilerActivity, profile

import mn

KERNELS = ("lse_kernel", "fwd_kernel", "bwd_kernel")


def record_launches(kernels) -> dict:
    """Wraps each autotuned kernel's run so its last launch's compiled kernel is kept: name -> CompiledKernel
    (None in the interpreter, which compiles nothing)."""
    launched = {}
    for name in KERNELS:
        tuner = getattr(kernels, name)

        def run(*args, _name=name, _run=tuner.run, **kwargs):
            launched[_name] = _run(*args, **kwargs)
            return launched[_name]
        tuner.run = run
    return launched


def resources_table(kernels, launched: dict) -> list[str]:
    rows = ["| kernel | autotuned config | num_warps | num_stages | registers / thread | spilled bytes | shared KiB |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for name in KERNELS:
        best = getattr(getattr(kernels, name), "best_config", None)
        compiled = launched.get(name)
        if compiled is not None and hasattr(compiled, "_init_handles"):
            compiled._init_handles()                      # fills n_regs / n_spills on first use
        regs, spills = getattr(compiled, "n_regs", "n/a"), getattr(compiled, "n_spills", "n/a")
        shared = getattr(getattr(compiled, "metadata", None), "shared", None)
        rows.append(f"| {name} | {best.kwargs if best else 'n/a'} | {best.num_warps if best else 'n/a'} | "
                    f"{best.num_stages if best else 'n/a'} | {regs} | {spills} | "
                    f"{'n/a' if shared is None else f'{shared / 1024:.1f}'} |")
    return rows


def device_time_us(event) -> float:
    """An averaged profiler event's self time on the device (CPU time on a CPU-only dry run)."""
    if DEVICE == "cpu":
        return event.self_cpu_time_total
    return getattr(event, "self_device_time_total", None) or event.self_cuda_time_total


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="128,10000,100,256", help="B,S,C,n")
    parser.add_argument("--dtype", nargs="+", choices=("float32", "bfloat16"), default=["float32"],
                        help="input dtypes, one table each (one process: the second finds the kernels compiled)")
    parser.add_argument("--steps", type=int, default=10, help="profiled steps (after 3 untimed ones)")
    parser.add_argument("--out", help="also append the tables to this file")
    args = parser.parse_args(argv)
    B, S, C, n = (int(v) for v in args.config.split(","))
    import mn_kernels.inner_gradient.launch as kernels
    launched = record_launches(kernels)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.set_float32_matmul_precision("high")          # TF32 dots, as in bench_gpu.py's "triton tf32" row
    for dtype in args.dtype:
        profile_one(kernels, launched, B, S, C, n, dtype, args.steps, args.out)


def profile_one(kernels, launched, B, S, C, n, dtype, steps, out) -> None:
    (z, keys, values, weight, tau, alpha), target = make_head_inputs(B, S, C, n, getattr(torch, dtype))

    def step():
        logits = mn.adapted_logits(z, keys, values, weight, tau, alpha, gamma=5.0, backend="triton")
        F.cross_entropy(logits.float(), target).backward()

    for _ in range(3):                                  # autotuning and compilation happen here
        step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if DEVICE == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        if DEVICE == "cuda":
            torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if device_time_us(e) > 0]
    events.sort(key=device_time_us, reverse=True)
    total = sum(device_time_us(e) for e in events)
    where = "device" if DEVICE == "cuda" else "CPU (dry run)"
    lines = [f"## B={B} S={S} C={C} n={n}, {dtype} inputs, {steps} steps on "
             f"{torch.cuda.get_device_name() if DEVICE == 'cuda' else 'CPU'} (torch {torch.__version__})", "",
             *resources_table(kernels, launched), "",
             f"{where} time per step: {total / steps / 1000:.3f} ms", "",
             "| kernel / op | calls per step | ms per step | share |", "| --- | --- | --- | --- |"]
    for e in events[:25]:
        t = device_time_us(e)
        lines.append(f"| `{e.key[:90]}` | {e.count / steps:g} | {t / steps / 1000:.3f} | "
                     f"{100 * t / total:.1f}% |")
    text = "\n".join(lines) + "\n"
    print(text)
    if out:
        with open(out, "a") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
