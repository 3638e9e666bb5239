"""Fused (Triton) vs reference head step on one GPU: a markdown table of median milliseconds.

For each (B, S, C, n): the inner_gradient forward, its backward (given random cotangents), and one full head
training step (adapted logits, outer cross-entropy, backward into every input); on `triton` with fp32 inputs
(TF32 dots, the PyTorch default for matmuls here) and with bf16 inputs, and on the `torch` and `autograd`
references (fp32, TF32 allowed) measured in the same run. Speedups are the references' step time over
each Triton step; the `unchecked` rows (first config) price the value checks' synchronisation.
Peak memory is the step's allocation above its inputs; TFLOP/s counts 4 x 2·B·S·C·n
per step (forward contraction and the three backward ones). OOM is reported as OOM.

    python bench/bench_gpu.py [--configs 128,10000,100,256 ...] [--out FILE.md]

Without a GPU it runs on the CPU through Triton's interpreter (a dry run of this script: tiny configs only,
timings meaningless) -- how bench/gpu_check.sh is checked before it spends GPU time.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time

import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")
import torch.nn.functional as F
import triton
import triton.testing

import mn

CONFIGS = [(128, 10000, 100, 256), (128, 5000, 10, 256), (128, 10000, 200, 256), (512, 10000, 100, 256),
           (128, 100000, 100, 256), (128, 1000000, 100, 64)]
# (label, backend, input dtype)
IMPLS = [("triton tf32", "triton", torch.float32), ("triton bf16", "triton", torch.bfloat16),
         ("native fp32", "native", torch.float32),
         ("torch", "torch", torch.float32), ("autograd", "autograd", torch.float32)]
# Value checks off (`mn.set_value_checks(False)`), first config only: prices the one synchronisation per call
# that the checks cost (every other row runs with them on, the default).
UNCHECKED = [("triton tf32 unchecked", "triton", torch.float32), ("triton bf16 unchecked", "triton", torch.bfloat16)]
# Three inner steps (ft:3), first config only: steps 2-3 have per-example weights, which the fused kernels do
# not take, so on `triton` they run on the `torch` reference; this row prices that.
STEPS3 = [("triton tf32 ft:3", "triton", torch.float32), ("torch ft:3", "torch", torch.float32),
          ("autograd ft:3", "autograd", torch.float32)]


def backward_ms(outputs, inputs) -> float:
    """Median ms of the backward of `outputs` w.r.t. `inputs` under random cotangents (the graph kept)."""
    cot = tuple(torch.randn_like(t) for t in outputs)
    return bench_ms(lambda: torch.autograd.grad(outputs, inputs, cot, retain_graph=True))


def make_head_inputs(B, S, C, n, dtype, seed=0):
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    z = torch.randn(B, n, device=DEVICE, generator=g)
    keys = 0.1 * torch.randn(S, n, device=DEVICE, generator=g)
    values = torch.softmax(0.1 * torch.randn(S, C, device=DEVICE, generator=g), dim=1)
    weight = torch.randn(C, n, device=DEVICE, generator=g) / n ** 0.5
    tau = torch.tensor(10.0, device=DEVICE)
    alpha = torch.tensor(0.05, device=DEVICE)
    inputs = [t.to(dtype).requires_grad_() for t in (z, keys, values, weight, tau, alpha)]
    target = torch.randint(0, C, (B,), device=DEVICE, generator=g)
    return inputs, target


# Calls slower than this are timed 3 times by hand: do_bench's fixed 5-call estimate would cost minutes.
SLOW_MS = 200.0


def _wall_ms(fn) -> float:
    if DEVICE == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if DEVICE == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1e3


def bench_ms(fn) -> float:
    """Median ms: triton.testing.do_bench on the GPU; the median of 3 timed calls for slow calls and on CPU."""
    first = _wall_ms(fn)                      # warm-up (and autotuning, compilation) happens here
    if DEVICE == "cuda" and first < 20 * SLOW_MS and _wall_ms(fn) < SLOW_MS:
        return triton.testing.do_bench(fn, warmup=5, rep=40, return_mode="median")
    return statistics.median(_wall_ms(fn) for _ in range(3))


def peak_step_mib(step) -> float:
    if DEVICE != "cuda":
        return float("nan")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def measure(cfg, backend, dtype, inner_steps=1, value_checks=True):
    """{'fwd', 'bwd', 'step': median ms, 'mem': peak MiB of a step} or {'error': ...}; with inner_steps > 1
    only the step (the op's own forward and backward do not depend on it)."""
    B, S, C, n = cfg
    checks_before = mn.set_value_checks(value_checks)
    try:
        inputs, target = make_head_inputs(B, S, C, n, dtype)
        z, keys, values, weight, tau, alpha = inputs
        op_inputs = inputs[:5]

        def forward():
            return mn.inner_gradient(*op_inputs, gamma=5.0, backend=backend)

        def step():
            logits = mn.adapted_logits(*op_inputs, alpha, gamma=5.0, inner_steps=inner_steps, backend=backend)
            F.cross_entropy(logits.float(), target).backward()

        if inner_steps > 1:
            return {"step": bench_ms(step), "mem": peak_step_mib(step)}
        out = {"fwd": bench_ms(forward)}
        out["bwd"] = backward_ms(forward(), op_inputs)           # the forward's outputs are freed on return
        out["step"] = bench_ms(step)
        out["mem"] = peak_step_mib(step)
        return out
    except torch.cuda.OutOfMemoryError:
        return {"error": "OOM"}
    finally:
        mn.set_value_checks(checks_before)
        if DEVICE == "cuda":
            torch.cuda.empty_cache()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="*", help="B,S,C,n tuples (default: the issue's six)")
    parser.add_argument("--impls", nargs="*", help="labels to run (default: all)")
    parser.add_argument("--out", help="also write the table to this file")
    parser.add_argument("--steps3", action="store_true", help="add three-inner-step rows for the first config")
    args = parser.parse_args(argv)
    configs = [tuple(int(v) for v in c.split(",")) for c in args.configs] if args.configs else CONFIGS
    status = mn.available_backends(DEVICE)
    skipped = {label: status.get(backend, "not registered") for label, backend, _ in IMPLS
               if status.get(backend, "not registered") is not None}
    impls = [i for i in IMPLS if (not args.impls or i[0] in args.impls) and i[0] not in skipped]
    torch.set_float32_matmul_precision("high")     # TF32 for fp32 matmuls and fp32 tl.dot
    device_name = torch.cuda.get_device_name() if DEVICE == "cuda" else "CPU, Triton interpreter (dry run)"
    lines = [f"# Head step, fused vs references: {device_name}",
             f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
             f"- torch {torch.__version__} (CUDA {torch.version.cuda}), triton {triton.__version__}, "
             f"python {platform.python_version()}",
             f"- median ms (triton.testing.do_bench; calls over {SLOW_MS:.0f} ms: median of 3 timed calls); "
             "step = adapted logits + CE + backward; gamma 5, one inner step",
             "- argument value checks on (mn's default: one device synchronisation per call), except the "
             "`unchecked` rows (mn.set_value_checks(False))",
             *(f"- not measured: {label} ({why})" for label, why in skipped.items()),
             "", "| B,S,C,n | impl | fwd ms | bwd ms | step ms | vs torch | vs autograd | peak MiB | TFLOP/s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    sink = open(args.out, "w") if args.out else None

    def emit(line):                       # row by row: a run cut short still leaves its finished rows
        print(line, flush=True)
        if sink:
            sink.write(line + "\n")
            sink.flush()

    for line in lines:
        emit(line)
    def emit_rows(cfg, results, refs, flops):
        for label, r in results.items():
            if "error" in r:
                emit(f"| {','.join(map(str, cfg))} | {label} | {r['error']} | | | | | | |")
                continue

            def speedup(ref, r=r):
                other = results.get(ref, {})
                return f"{other['step'] / r['step']:.1f}x" if "step" in other else other.get("error", "-")
            fwd, bwd = (f"{r[k]:.3f}" if k in r else "-" for k in ("fwd", "bwd"))
            emit(f"| {','.join(map(str, cfg))} | {label} | {fwd} | {bwd} | {r['step']:.3f} | {speedup(refs[0])} | "
                 f"{speedup(refs[1])} | {r['mem']:.0f} | {flops / r['step'] / 1e9:.1f} |")

    for k, cfg in enumerate(configs):
        results = {label: measure(cfg, backend, dtype) for label, backend, dtype in impls}
        if k == 0:
            results |= {label: measure(cfg, backend, dtype, value_checks=False)
                        for label, backend, dtype in UNCHECKED if label.removesuffix(" unchecked") in results}
        emit_rows(cfg, results, ("torch", "autograd"), 4 * 2 * cfg[0] * cfg[1] * cfg[2] * cfg[3])
        if k == 0 and args.steps3:
            results = {label: measure(cfg, backend, dtype, inner_steps=3) for label, backend, dtype in STEPS3}
            emit_rows(cfg, results, ("torch ft:3", "autograd ft:3"), 3 * 4 * 2 * cfg[0] * cfg[1] * cfg[2] * cfg[3])


if __name__ == "__main__":
    main()
