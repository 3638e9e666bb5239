"""Every autotune candidate of each Triton kernel at one config, fp32 (TF32 dots) and bf16 inputs, with its time:
the autotuner's whole view, kept so that tuning can continue offline (docs/design.md, "Performance contract").

For each dtype, one head step is captured (bench/kernel_launches.py: each kernel's real arguments), then each
kernel is launched again with every config of its `.gpu_configs` (mn_kernels/inner_gradient/configs.py) and
timed with triton.testing.do_bench (median; L2 flushed between calls). Each row gives the compiled resources
(registers per thread, spilled bytes, shared memory) and the largest difference of the kernel's outputs from
those of the first candidate (max|x - x0| / max|x0|: summation order moves it by rounding; a larger value is a
wrong result). A config that does not compile or launch is reported as failed, with its error. After the
candidates, `--extra N` more configs (other num_warps / num_stages of the candidates' tiles, and a few other
tiles), in the order of the list in `extra_configs`, while the time budget lasts; a background process
compiles them ahead (threads) so that the timed process mostly finds them in Triton's cache.

    python bench/sweep_gpu.py [--config 128,10000,100,256] [--dtypes float32 bfloat16] [--extra 64]
                              [--out FILE.md] [--budget-s SECONDS]

Without a GPU it runs in Triton's interpreter (a dry run: tiny config, times meaningless, no resources).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("MN_AUTOTUNE", "0")    # capture with each kernel's first candidate, nothing benchmarked
import kernel_launches as kl
import report
import torch
import triton

MISMATCH = 2e-2          # an output difference above this (relative to the output's largest value) is wrong


def extra_configs(tuner) -> list:
    """Configs beyond the candidates, most promising first: each candidate's tiles with the other num_warps
    (4, 8) and num_stages (1..4), then a few larger tiles; none already among the candidates."""
    seen = {(tuple(sorted(c.kwargs.items())), c.num_warps, c.num_stages) for c in tuner.gpu_configs}
    names = list(tuner.gpu_configs[0].kwargs)
    tiles = [dict(c.kwargs) for c in tuner.gpu_configs[:-1]]             # the candidates, not `small`
    more = {"BLOCK_B": [{"BLOCK_B": 64}], "BLOCK_S": [{"BLOCK_S": 128}]}
    for key, changes in more.items():
        if key in names:
            for change in changes:
                tiles.append({**tiles[0], **change})
    out = []
    for tile in tiles:
        for warps, stages in ((8, 1), (8, 2), (8, 3), (4, 1), (4, 2), (4, 3), (8, 4), (4, 4)):
            key = (tuple(sorted(tile.items())), warps, stages)
            if key not in seen:
                seen.add(key)
                out.append(triton.Config(dict(tile), num_warps=warps, num_stages=stages))
    return out


def plan(launches_by_dtype: dict, extra: int) -> list:
    """(dtype, kernel, index, config, is_extra) in measuring order: every candidate of every kernel and dtype,
    then the extras, kernel by kernel (backward first: most of the step's time), both dtypes."""
    rows = []
    for dtype, launches in launches_by_dtype.items():
        for name in kl.KERNELS:
            for i, config in enumerate(launches[name].tuner.gpu_configs):
                rows.append((dtype, name, i, config, False))
    if extra:
        extras = {}
        for dtype, launches in launches_by_dtype.items():
            for name in kl.KERNELS:
                extras[dtype, name] = extra_configs(launches[name].tuner)
        count = 0
        for name in ("bwd_kernel", "fwd_kernel", "lse_kernel"):
            depth = max(len(extras[d, name]) for d in launches_by_dtype)
            for j in range(depth):
                for dtype in launches_by_dtype:
                    if j < len(extras[dtype, name]) and count < extra:
                        rows.append((dtype, name, f"x{j}", extras[dtype, name][j], True))
                        count += 1
    return rows


def measure(launch, config, reference):
    """{'ms', 'resources', 'diff'} or {'error'}; the outputs are zeroed first (a program that owns no tile
    leaves its partial untouched), then checked against `reference` (a snapshot) if given."""
    try:
        launch.zero_outputs()
        compiled = launch.run(config)
        kl.synchronize()
        snapshot = launch.snapshot()
        diff = kl.max_rel_diff(snapshot, reference) if reference is not None else 0.0
        ms = kl.time_ms(lambda: launch.run(config))
        return {"ms": ms, "resources": kl.resources(compiled), "diff": diff, "snapshot": snapshot}
    except Exception as exc:                                   # noqa: BLE001 (a failed config is a result)
        return {"error": report.short_error(exc)}


def precompile_child(args) -> None:
    """The background process: captures the same launches and compiles the plan ahead, in threads."""
    launches = {dtype: kl.capture(args.cfg, kl.DTYPES[dtype]) for dtype in args.dtypes}
    rows = plan(launches, args.extra)
    jobs = [lambda launch=launches[dtype][name], config=config: launch.run(config, warmup=True)
            for dtype, name, _, config, _ in rows]
    deadline = time.monotonic() + (args.budget_s or 600)
    done, failed = kl.precompile(jobs, deadline=deadline)
    print(f"sweep precompile: {done} compiled, {failed} failed, of {len(jobs)}", file=sys.stderr)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    kl.add_common_args(parser, budget=True)
    parser.add_argument("--extra", type=int, default=64, help="at most this many configs beyond the candidates")
    parser.add_argument("--precompile", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.cfg = kl.parse_config(args.config)
    torch.set_float32_matmul_precision("high")                # TF32 dots for fp32 inputs
    if args.precompile:
        precompile_child(args)
        return
    budget = report.Budget(args.budget_s)
    emit = report.open_report(f"# Autotune sweep of the Triton kernels at B,S,C,n = {args.config}", __file__, argv,
                              args.out)
    emit("- each kernel launched alone with one head step's real arguments (fp32 inputs: TF32 dots; bf16: bf16 "
         "operands); ms = median of triton.testing.do_bench; `diff` = max|out - out of candidate 0| / max|out of "
         f"candidate 0| (rounding moves it; above {MISMATCH:g} flagged WRONG); `x` rows are extras, not candidates")
    child = kl.spawn_precompile(__file__, argv)
    try:
        launches = {}
        for dtype in args.dtypes:
            launches[dtype] = kl.capture(args.cfg, kl.DTYPES[dtype])
        rows = plan(launches, args.extra)
        emit(f"- {sum(not r[4] for r in rows)} candidates and {sum(r[4] for r in rows)} extras planned; "
             f"budget {'none' if args.budget_s is None else f'{args.budget_s:.0f} s'}")
        emit("")
        emit("| kernel | dtype | # | config | ms | vs #0 | regs | spills | shared KiB | diff | note |")
        emit("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        reference, first_ms, best, measured = {}, {}, {}, 0
        for dtype, name, index, config, _ in rows:
            if budget.spent(reserve=2.0):
                emit(f"| - | - | - | - | stopped: time budget spent, {len(rows) - measured} configs not measured "
                     "| | | | | | |")
                break
            measured += 1
            r = measure(launches[dtype][name], config, reference.get((dtype, name)))
            label = kl.LABEL[dtype]
            if "error" in r:
                emit(f"| {name} | {label} | {index} | {kl.config_label(config)} | failed | | | | | | {r['error']} |")
                continue
            if (dtype, name) not in reference:
                reference[dtype, name], first_ms[dtype, name] = r["snapshot"], r["ms"]
            regs, spills, shared = r["resources"]
            note = "WRONG" if not r["diff"] <= MISMATCH else ""
            if not note and r["ms"] < best.get((dtype, name), (float("inf"),))[0]:
                best[dtype, name] = (r["ms"], index, kl.config_label(config))
            emit(f"| {name} | {label} | {index} | {kl.config_label(config)} | {r['ms']:.4f} | "
                 f"{first_ms[dtype, name] / r['ms']:.2f}x | {regs} | {spills} | {shared} | {r['diff']:.1e} | "
                 f"{note} |")
        emit("")
        emit("Fastest correct config per kernel (of those measured):")
        emit("")
        emit("| dtype | kernel | first candidate ms | fastest ms | fastest # | config |")
        emit("| --- | --- | --- | --- | --- | --- |")
        for dtype in args.dtypes:
            total_first = total_best = 0.0
            for name in kl.KERNELS:
                if (dtype, name) not in best:
                    emit(f"| {kl.LABEL[dtype]} | {name} | - | - | - | none measured |")
                    continue
                ms, index, label = best[dtype, name]
                total_first += first_ms[dtype, name]
                total_best += ms
                emit(f"| {kl.LABEL[dtype]} | {name} | {first_ms[dtype, name]:.4f} | {ms:.4f} | {index} | {label} |")
            emit(f"| {kl.LABEL[dtype]} | all three | {total_first:.4f} | {total_best:.4f} | | |")
        emit("")
        emit(f"- took {budget.elapsed():.0f} s")
    finally:
        child.kill()
        child.wait()
        emit.close()


if __name__ == "__main__":
    main()
