"""Fused (Triton) vs reference head step on one GPU: a markdown table of median milliseconds, written row by row.

For each (B, S, C, n), in this order (docs/design.md, "Performance contract"):
- the references of every GPU table, measured in the same run: the `gemm limit`, one cuBLAS matmul with the
  step's flops (4 x 2·B·S·C·n), TF32 and bf16 (a square m x m x m product timed, its rate applied to the
  step's flops); the literal form (`autograd`, fp32, TF32 allowed); the `plain closed form`
  (bench/plain_closed_form.py, the S x (C n) GEMM formulation a user would write) with fp32 inputs (TF32
  matmuls) and with bf16 inputs;
- `triton` with fp32 inputs (TF32 dots) and with bf16 inputs, the `torch` closed form and `native` (fp32).
For the inner_gradient op alone: forward, and backward given random cotangents; for one full head training
step (adapted logits, outer cross-entropy, backward into every input): its time, its speedups over the plain
closed form of the same input dtype (TF32 for fp32 rows) and over the literal form, its efficiency as the
gemm limit's time (same dtype) over its own, peak memory above its inputs, and TFLOP/s counting 4 x 2·B·S·C·n.
First config only: rows with value checks off (`unchecked`: the price of the checks' one synchronisation per
call; every other row runs with them on, mn's default), a value check (relative errors of the logits and of
every input's gradient against the float64 `torch` backend), and with --steps3 three inner steps (ft:3, steps
2-3 on the torch reference). OOM is reported as OOM.

    python bench/bench_gpu.py [--configs 128,10000,100,256 ...] [--steps3] [--out FILE.md] [--budget-s S]

With a time budget (--budget-s, or $MN_BENCH_BUDGET_S as bench/gpu_check.sh sets it) no new measurement
starts once it is spent, and the table says what was not measured. Without a GPU it runs on the CPU through
Triton's interpreter (a dry run of this script: tiny configs only, timings meaningless) -- how
bench/gpu_check.sh is checked before it spends GPU time.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")
import torch.nn.functional as F
import triton
import triton.testing
from plain_closed_form import plain_adapted_logits
from report import Budget, add_budget_arg, open_report, short_error

import mn

CONFIGS = [(128, 10000, 100, 256), (128, 5000, 10, 256), (128, 10000, 200, 256), (512, 10000, 100, 256),
           (128, 100000, 100, 256), (128, 1000000, 100, 64)]
# (label, backend, input dtype), in measuring order: the references first, so every later row can quote them.
# `plain` and `gemm` are references of this script, not mn backends.
GEMM = [("gemm limit tf32", "gemm", torch.float32), ("gemm limit bf16", "gemm", torch.bfloat16)]
LITERAL = ("autograd", "autograd", torch.float32)
PLAIN = [("plain closed form tf32", "plain", torch.float32), ("plain closed form bf16", "plain", torch.bfloat16)]
IMPLS = [("triton tf32", "triton", torch.float32), ("triton bf16", "triton", torch.bfloat16),
         ("torch", "torch", torch.float32), ("native fp32", "native", torch.float32)]
# Value checks off (`mn.set_value_checks(False)`), first config only: prices the one synchronisation per call
# that the checks cost (every other row runs with them on, the default).
UNCHECKED = [("triton tf32 unchecked", "triton", torch.float32), ("triton bf16 unchecked", "triton", torch.bfloat16)]
# Three inner steps (ft:3), first config only: steps 2-3 have per-example weights, which the fused kernels do
# not take, so on `triton` they run on the `torch` reference; this row prices that.
STEPS3 = [("autograd ft:3", "autograd", torch.float32), ("triton tf32 ft:3", "triton", torch.float32),
          ("torch ft:3", "torch", torch.float32)]
# The value check's rows: (label, backend or "plain", input dtype).
CHECKED = [("triton tf32", "triton", torch.float32), ("triton bf16", "triton", torch.bfloat16),
           ("plain tf32", "plain", torch.float32), ("plain bf16", "plain", torch.bfloat16)]
GRAD_NAMES = ("z", "keys", "values", "weight", "tau", "alpha")


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
    """Median ms: triton.testing.do_bench on the GPU; the median of 3 timed calls for slow calls; on the CPU
    (dry run: the number only proves the path runs) one timed call."""
    first = _wall_ms(fn)                      # warm-up (and autotuning, compilation) happens here
    if DEVICE == "cpu":
        return _wall_ms(fn)
    if first < 20 * SLOW_MS and _wall_ms(fn) < SLOW_MS:
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


def step_flops(cfg, inner_steps=1) -> float:
    """4 x 2·B·S·C·n per inner step: the forward contraction and the three backward ones."""
    B, S, C, n = cfg
    return inner_steps * 4 * 2 * B * S * C * n


def gemm_side(flops: float) -> int:
    """m of the square m x m x m product closest to `flops` (2 m^3), a multiple of 128 (cuBLAS's best shapes)."""
    return max(128, round((flops / 2) ** (1 / 3) / 128) * 128)


def measure_gemm(cfg, dtype):
    """{'step': ms that the step's flops take at the rate of one square cuBLAS matmul, 'tflops', 'm'}."""
    m = gemm_side(step_flops(cfg))
    g = torch.Generator(device=DEVICE).manual_seed(1)
    a = torch.randn(m, m, device=DEVICE, generator=g).to(dtype)      # random data: zeros run faster
    b = torch.randn(m, m, device=DEVICE, generator=g).to(dtype)
    ms = bench_ms(lambda: a @ b)
    rate = 2 * m ** 3 / (ms * 1e-3)
    return {"step": step_flops(cfg) / rate * 1e3, "tflops": rate / 1e12, "m": m}


def measure(cfg, backend, dtype, inner_steps=1, value_checks=True):
    """{'fwd', 'bwd', 'step': median ms, 'mem': peak MiB of a step} or {'error': ...}; with inner_steps > 1
    or the plain closed form only the step (the op's own forward and backward do not depend on it)."""
    B, S, C, n = cfg
    checks_before = mn.set_value_checks(value_checks)
    try:
        if backend == "gemm":
            return measure_gemm(cfg, dtype)
        inputs, target = make_head_inputs(B, S, C, n, dtype)
        z, keys, values, weight, tau, alpha = inputs
        op_inputs = inputs[:5]

        def forward():
            return mn.inner_gradient(*op_inputs, gamma=5.0, backend=backend)

        def step():
            if backend == "plain":
                logits = plain_adapted_logits(*op_inputs, alpha, gamma=5.0)
            else:
                logits = mn.adapted_logits(*op_inputs, alpha, gamma=5.0, inner_steps=inner_steps, backend=backend)
            F.cross_entropy(logits.float(), target).backward()

        if inner_steps > 1 or backend == "plain":
            return {"step": bench_ms(step), "mem": peak_step_mib(step)}
        out = {"fwd": bench_ms(forward)}
        out["bwd"] = backward_ms(forward(), op_inputs)           # the forward's outputs are freed on return
        out["step"] = bench_ms(step)
        out["mem"] = peak_step_mib(step)
        return out
    except torch.cuda.OutOfMemoryError:
        return {"error": "OOM"}
    except Exception as exc:                                     # noqa: BLE001 (one failed row, not the table)
        return {"error": f"failed: {short_error(exc, 120)}"}
    finally:
        mn.set_value_checks(checks_before)
        if DEVICE == "cuda":
            torch.cuda.empty_cache()


def value_errors(cfg) -> dict:
    """label -> [relative error of the logits, then of the gradient of each input] of one head step (CE loss)
    against the float64 `torch` backend on the same inputs: ||x - ref|| / ||ref||."""
    B, S, C, n = cfg
    ref_inputs, target = make_head_inputs(B, S, C, n, torch.float64)

    def outputs(inputs, backend):
        if backend == "plain":
            logits = plain_adapted_logits(*inputs[:5], inputs[5], gamma=5.0)
        else:
            logits = mn.adapted_logits(*inputs[:5], inputs[5], gamma=5.0, backend=backend)
        grads = torch.autograd.grad(F.cross_entropy(logits.double(), target), inputs)
        return [logits.detach().double(), *(g.double() for g in grads)]

    ref = outputs(ref_inputs, "torch")
    errors = {}
    for label, backend, dtype in CHECKED:
        try:
            got = outputs([t.detach().to(dtype).requires_grad_() for t in ref_inputs], backend)
            errors[label] = [((g - r).norm() / r.norm()).item() for g, r in zip(got, ref)]
        except Exception as exc:                                 # noqa: BLE001
            errors[label] = f"failed: {type(exc).__name__}"
    return errors


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="*", help="B,S,C,n tuples (default: the issue's six)")
    parser.add_argument("--impls", nargs="*", help="labels to run besides the references (default: all)")
    parser.add_argument("--out", help="also write the table to this file")
    parser.add_argument("--steps3", action="store_true", help="add three-inner-step rows for the first config")
    add_budget_arg(parser)
    args = parser.parse_args(argv)
    budget = Budget(args.budget_s)
    configs = [tuple(int(v) for v in c.split(",")) for c in args.configs] if args.configs else CONFIGS
    status = mn.available_backends(DEVICE)
    skipped = {label: status.get(backend, "not registered") for label, backend, _ in [LITERAL, *IMPLS]
               if status.get(backend, "not registered") is not None}
    impls = [i for i in IMPLS if (not args.impls or i[0] in args.impls) and i[0] not in skipped]
    torch.set_float32_matmul_precision("high")     # TF32 for fp32 matmuls and fp32 tl.dot
    lines = [f"- median ms (triton.testing.do_bench; calls over {SLOW_MS:.0f} ms: median of 3 timed calls); "
             "step = adapted logits + CE + backward; gamma 5, one inner step",
             "- references in this run: `plain closed form` (bench/plain_closed_form.py: S x (C n) GEMM, autograd; "
             "bf16 inputs compute in bf16), `gemm limit` (the step's 4 x 2·B·S·C·n flops at the rate of one square "
             "cuBLAS matmul, m x m x m with m in the impl column), the literal form `autograd` (fp32, TF32)",
             "- vs plain: plain closed form's step / this step, same input dtype (TF32 for fp32 rows); vs literal: "
             "autograd's step / this step; of gemm: gemm limit (same dtype) / this step",
             "- argument value checks on (mn's default: one device synchronisation per call), except the "
             "`unchecked` rows (mn.set_value_checks(False))",
             *(f"- not measured: {label} ({why})" for label, why in skipped.items()),
             "",
             "| B,S,C,n | impl | fwd ms | bwd ms | step ms | vs plain | vs literal | of gemm | peak MiB | TFLOP/s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    # row by row: a run cut short still leaves its finished rows
    emit = open_report("# Head step, fused vs references", __file__, argv, args.out)
    for line in lines:
        emit(line)
    header = lines[-2:]
    state = {"header": False}                 # the table's header is due again (after the value check)

    def row(cfg, label, r, refs, steps=1):
        if state["header"]:
            emit("")
            for line in header:
                emit(line)
            state["header"] = False
        name = ",".join(map(str, cfg))
        if "error" in r:
            emit(f"| {name} | {label} | {r['error']} | | | | | | | |")
            return
        if "m" in r:                                            # a gemm limit row
            emit(f"| {name} | {label} (m={r['m']}) | - | - | {r['step']:.3f} | | | 100% | - | {r['tflops']:.1f} |")
            return
        bf16 = "bf16" in label

        def ratio(ref):
            other = refs.get(ref, {})
            return f"{other['step'] / r['step']:.2f}x" if "step" in other else other.get("error", "-")
        plain = ratio("plain closed form bf16" if bf16 else "plain closed form tf32") if steps == 1 else "-"
        literal = ratio("autograd" if steps == 1 else "autograd ft:3")
        gemm = refs.get("gemm limit bf16" if bf16 else "gemm limit tf32", {})
        share = 100 * steps * gemm["step"] / r["step"] if "step" in gemm else None
        of_gemm = "-" if share is None else f"{share:.0f}%" if share >= 10 else f"{share:.2g}%"
        fwd, bwd = (f"{r[k]:.3f}" if k in r else "-" for k in ("fwd", "bwd"))
        mem = f"{r['mem']:.0f}" if r["mem"] == r["mem"] else "-"
        emit(f"| {name} | {label} | {fwd} | {bwd} | {r['step']:.3f} | {plain} | {literal} | {of_gemm} | {mem} | "
             f"{step_flops(cfg, steps) / r['step'] / 1e9:.1f} |")

    not_measured = []
    for k, cfg in enumerate(configs):
        plan = [(label, backend, dtype, 1, True) for label, backend, dtype in [*GEMM, LITERAL, *PLAIN, *impls]
                if label not in skipped]
        if k == 0:
            plan += [(label, backend, dtype, 1, False) for label, backend, dtype in UNCHECKED
                     if label.removesuffix(" unchecked") in [i[0] for i in impls]]
            plan.append(("value check", None, None, 1, True))
            if args.steps3:
                plan += [(label, backend, dtype, 3, True) for label, backend, dtype in STEPS3
                         if status.get(backend, "not registered") is None]
        refs = {}
        for label, backend, dtype, steps, checks in plan:
            if budget.spent():
                not_measured.append(f"{','.join(map(str, cfg))} {label}")
                continue
            if label == "value check":
                emit_value_check(emit, cfg, value_errors(cfg))
                state["header"] = True
                continue
            r = measure(cfg, backend, dtype, inner_steps=steps, value_checks=checks)
            refs[label] = r
            row(cfg, label, r, refs, steps)
    if not_measured:
        emit("")
        emit(f"- not measured (time budget of {args.budget_s:.0f} s spent): " + "; ".join(not_measured))
    emit("")
    emit(f"- took {budget.elapsed():.0f} s")
    emit.close()


def emit_value_check(emit, cfg, errors: dict) -> None:
    """The value check as its own small table, between the first config's rows and the next config's."""
    emit("")
    emit(f"Value check at {','.join(map(str, cfg))}: ||x - ref|| / ||ref|| against the float64 `torch` backend "
         "(expected about 1e-4..1e-3 with TF32 dots, 1e-3..3e-2 with bf16 inputs; NaN or > 0.1 is wrong):")
    emit("")
    emit("| output | " + " | ".join(errors) + " |")
    emit("| --- |" + " --- |" * len(errors))
    for i, name in enumerate(("logits", *(f"d{n}" for n in GRAD_NAMES))):
        cells = [(f"{e[i]:.1e}" if isinstance(e, list) else e) for e in errors.values()]
        emit(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
