"""Where each Triton kernel's time goes, without hardware counters: the kernel timed with one stage removed or
done twice (no mask/exp, no second dot, dots only, ...), against the unchanged kernel in the same run.
A stage's cost is about the base time minus the time without it; a doubled stage adds its cost again where
it is on the critical path (and little where it hides behind another unit's work).

The production kernels are not touched and take no flags: each variant is generated here from the kernel's
source (inspect), by statement-level edits (`VARIANTS`: a statement is found by the start of its text, so
line wrapping does not matter), written with absolute imports and without the autotune decorator to a
module in a temporary folder, jitted, and launched with one head step's real arguments
(bench/kernel_launches.py) and the kernel's first GPU config. A variant whose edit does not find its
statement (the kernel changed) is reported as "patch did not apply"; one that does not compile or launch,
as failed. A background process compiles the variants ahead (threads), in the order they are timed.

    python bench/ablate_gpu.py [--config 128,10000,100,256] [--dtypes float32 bfloat16]
                               [--kernels bwd_kernel fwd_kernel lse_kernel] [--out FILE.md] [--budget-s S]

Without a GPU it runs in Triton's interpreter (a dry run: tiny config, times meaningless; it does check
that every edit applies and that every variant runs).
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.util
import inspect
import os
import re
import sys
import tempfile
import time

os.environ.setdefault("MN_AUTOTUNE", "0")    # capture with each kernel's first candidate, nothing benchmarked
import kernel_launches as kl
import report
import torch


class PatchError(Exception):
    """An edit that did not find its statement."""


# (name, what it changes, edits). An edit is (op, start of a statement's text, new text): op "replace" puts
# the new text (lines joined by \n) in place of every statement that starts so; "delete" puts `pass` there;
# "after" keeps the statement and adds the new text after it. Order: most telling first (a run cut short
# keeps the first); the backward first, the largest share of the step.
VARIANTS = {
    "bwd_kernel": [
        ("no class loop", "the whole per-class loop removed (X, ddelta, the dkh class dot): what is left is "
         "per (entry tile, query block)", [("replace", "for c in range(0, C):", "pass")]),
        ("no X dot", "X_c^T = kh dU_c^T replaced by the weights",
         [("replace", "xT = tl.dot(kh, tl.trans(dU)", "xT = wT")]),
        ("no dkh class dot", "dkh += (w delta_c)^T dU_c replaced by a row sum",
         [("replace", "dkh = tl.dot(wd, dU, dkh", "dkh += tl.sum(wd.to(acc_ty), axis=1)[:, None]")]),
        ("no mask/exp", "weights = raw scores (no tl.where, no exp)",
         [("replace", "wT = attention_t(", "wT = tl.dot(kh, tl.trans(zh), input_precision=PRECISION)")]),
        ("no dU projection", "dU = dg: no P_c (hw, wh, 1/||w|| loads and arithmetic)",
         [("replace", "dU = ((h - hw", "dU = h.to(zh.dtype)")]),
        ("no dg loads", "the incoming gradient's tile a constant (no B x C x n reads)",
         [("replace", "h = tl.load(h_ptr", "h = tl.full([BLOCK_B, BLOCK_N], 0.01, acc_ty)")]),
        ("dots only", "no mask/exp, no P_c, no ddelta read-add-write, constant delta",
         [("replace", "wT = attention_t(", "wT = tl.dot(kh, tl.trans(zh), input_precision=PRECISION)"),
          ("replace", "dU = ((h - hw", "dU = h.to(zh.dtype)"),
          ("delete", "dd = tl.sum(wx", ""), ("delete", "if b0 > 0:", ""), ("delete", "tl.store(dd_ptrs", ""),
          ("replace", "delta = tl.load(delta_ptrs", "delta = tl.full([BLOCK_S], 0.5, acc_ty)")]),
        ("no ddelta read-add-write", "ddelta's per-class reduction, load and store removed",
         [("delete", "dd = tl.sum(wx", ""), ("delete", "if b0 > 0:", ""), ("delete", "tl.store(dd_ptrs", "")]),
        ("no dzh partial", "the ds^T kh dot and the dzh partial's read-add-write removed",
         [("delete", "if t > first_tile:", ""), ("delete", "dz = tl.dot(tl.trans(dsT)", ""),
          ("delete", "tl.store(dz_ptrs", "")]),
        ("no delta loads", "delta_c a constant",
         [("replace", "delta = tl.load(delta_ptrs", "delta = tl.full([BLOCK_S], 0.5, acc_ty)")]),
        ("no key loads", "key tiles a constant (no loads of keys or their norms)",
         [("replace", "kh = key_tile(", "kh = tl.full([BLOCK_S, BLOCK_N], 0.0625, zh_ptr.dtype.element_ty)")]),
        ("X dot x2", "the X dot done twice", [("after", "xT = tl.dot(kh, tl.trans(dU)",
                                               "xT = tl.dot(kh, tl.trans(dU), xT, input_precision=PRECISION)")]),
        ("dkh class dot x2", "the dkh class dot done twice",
         [("after", "dkh = tl.dot(wd, dU, dkh",
           "dkh = tl.dot(wd, dU, dkh, input_precision=PRECISION, out_dtype=acc_ty)")]),
    ],
    "fwd_kernel": [
        ("no contraction dot", "U += A @ kh replaced by a row sum of A",
         [("replace", "acc = tl.dot(a.to(kh.dtype), kh, acc", "acc += tl.sum(a, axis=1)[:, None]")]),
        ("no scores", "no score dot, mask or exp: constant weights",
         [("replace", "w = attention(", "w = tl.full([BLOCK_B, BLOCK_S], 1.0e-4, acc_ty)")]),
        ("no mask/exp", "weights = raw scores (no tl.where, no exp)",
         [("replace", "w = attention(", "w = tl.dot(zh, tl.trans(kh), input_precision=PRECISION)")]),
        ("dots only", "no mask/exp, constant delta, no loss",
         [("replace", "w = attention(", "w = tl.dot(zh, tl.trans(kh), input_precision=PRECISION)"),
          ("replace", "delta = tl.load(deltaT_ptr", "delta = tl.full([BLOCK_C, BLOCK_S], 0.5, acc_ty)"),
          ("delete", "ce = tl.load(ce_ptr", ""), ("delete", "loss += tl.sum(w * ce", "")]),
        ("contraction dot x2", "U += A @ kh done twice",
         [("after", "acc = tl.dot(a.to(kh.dtype), kh, acc",
           "acc = tl.dot(a.to(kh.dtype), kh, acc, input_precision=PRECISION, out_dtype=acc_ty)")]),
        ("scores x2", "score dot, mask and exp done twice",
         [("after", "w = attention(", "w += attention(zh, kh, lse, keep, PRECISION)")]),
        ("no delta loads", "delta a constant",
         [("replace", "delta = tl.load(deltaT_ptr", "delta = tl.full([BLOCK_C, BLOCK_S], 0.5, acc_ty)")]),
        ("no key loads", "key tiles a constant (no loads of keys or their norms)",
         [("replace", "kh = key_tile(", "kh = tl.full([BLOCK_S, BLOCK_N], 0.0625, zh.dtype)")]),
        ("no loss", "the loss's ce loads and row sums removed",
         [("delete", "ce = tl.load(ce_ptr", ""), ("delete", "loss += tl.sum(w * ce", "")]),
    ],
    "lse_kernel": [
        ("no exp", "the online softmax's exps removed (max kept): l += sum(s - m)",
         [("replace", "l_i = l_i * tl.exp(", "l_i = l_i + tl.sum(s - m_new[:, None], axis=1)")]),
        ("dot only", "no mask, max or exp: l += sum(s)",
         [("delete", "keep = keep_mask(", ""), ("delete", "s = tl.where(keep", ""),
          ("replace", "m_new = tl.maximum(", "m_new = m_i"),
          ("replace", "l_i = l_i * tl.exp(", "l_i = l_i + tl.sum(s, axis=1)")]),
        ("no mask", "the keep mask and its tl.where removed", [("delete", "keep = keep_mask(", ""),
                                                             ("delete", "s = tl.where(keep", "")]),
        ("dot x2", "the score dot done twice",
         [("after", "s = tl.dot(zh, tl.trans(kh)", "s = tl.dot(zh, tl.trans(kh), s, input_precision=PRECISION)")]),
        ("no key loads", "key tiles a constant (no loads of keys or their norms)",
         [("replace", "kh = key_tile(", "kh = tl.full([BLOCK_S, BLOCK_N], 0.0625, zh.dtype)")]),
    ],
}
BASE = ("base", "the kernel's own source through the same edit-and-jit path (no edit)", [])


def _norm(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _absolute_imports(src: str, package: str) -> str:
    def resolve(match):
        return f"{match.group(1)}from {importlib.util.resolve_name(match.group(2), package)} import"
    return re.sub(r"^(\s*)from (\.+[\w.]*) import", resolve, src, flags=re.M)


def variant_source(module, kernel: str, edits) -> str:
    """The source of `module` with `edits` applied inside function `kernel`, every autotune decorator removed,
    imports made absolute. Raises PatchError when an edit finds no statement."""
    src = inspect.getsource(module)
    lines = src.split("\n")
    tree = ast.parse(src)
    func = next((node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name == kernel), None)
    if func is None:
        raise PatchError(f"no function {kernel} in {module.__name__}")
    statements = [node for node in ast.walk(func) if isinstance(node, ast.stmt) and node is not func]
    changes = []
    for op, start, new in edits:
        key = _norm(start)
        hits = [s for s in statements
                if _norm("\n".join(lines[s.lineno - 1:s.end_lineno])[s.col_offset:]).startswith(key)]
        if not hits:
            raise PatchError(f"no statement of {kernel} starts with {start!r}")
        for s in hits:
            indent = " " * s.col_offset
            added = [indent + line for line in new.split("\n")]
            old = lines[s.lineno - 1:s.end_lineno]
            replacement = {"replace": added, "delete": [indent + "pass"], "after": old + added}[op]
            changes.append((s.lineno, s.end_lineno, replacement))
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            for decorator in node.decorator_list:
                target = decorator.func if isinstance(decorator, ast.Call) else decorator
                if isinstance(target, ast.Name) and target.id == "autotune":
                    changes.append((decorator.lineno, decorator.end_lineno, []))
    changes.sort()
    for (_, end, _), (start, _, _) in zip(changes, changes[1:]):
        if start <= end:
            raise PatchError(f"two edits of {kernel} touch the same lines")
    for start, end, replacement in reversed(changes):
        lines[start - 1:end] = replacement
    return _absolute_imports("\n".join(lines), module.__package__)


def build_variant(tuner, kernel: str, variant) -> object:
    """The jitted kernel of `variant` (name, what, edits), from a module written under the temp folder."""
    name, _, edits = variant
    module = sys.modules[tuner.fn.fn.__module__]
    src = variant_source(module, kernel, edits)
    folder = os.path.join(tempfile.gettempdir(), "mn-ablation-" + hashlib.sha1(src.encode()).hexdigest()[:8])
    os.makedirs(folder, exist_ok=True)
    modname = f"mn_ablation_{kernel}_{re.sub(r'[^0-9a-zA-Z]+', '_', name).strip('_')}"
    path = os.path.join(folder, modname + ".py")
    partial = f"{path}.{os.getpid()}.tmp"
    with open(partial, "w") as f:
        f.write(src)
    os.replace(partial, path)
    spec = importlib.util.spec_from_file_location(modname, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[modname] = mod
    spec.loader.exec_module(mod)
    return getattr(mod, kernel)


def plan(kernels, dtypes) -> list:
    """(kernel, variant, dtype) in timing order: per kernel the base, then each variant, both dtypes each."""
    return [(kernel, variant, dtype) for kernel in kernels for variant in [BASE, *VARIANTS[kernel]]
            for dtype in dtypes]


def build_all(launches_by_dtype, rows) -> dict:
    """(kernel, variant name) -> jitted function, or the error text."""
    built = {}
    some = next(iter(launches_by_dtype.values()))
    for kernel, variant, _ in rows:
        if (kernel, variant[0]) in built:
            continue
        try:
            built[kernel, variant[0]] = build_variant(some[kernel].tuner, kernel, variant)
        except PatchError as exc:
            built[kernel, variant[0]] = f"patch did not apply: {exc}"
        except Exception as exc:                              # noqa: BLE001 (a broken variant is a result)
            built[kernel, variant[0]] = f"variant does not build: {report.short_error(exc)}"
    return built


def precompile_child(args) -> None:
    launches = {dtype: kl.capture(args.cfg, kl.DTYPES[dtype]) for dtype in args.dtypes}
    rows = plan(args.kernels, args.dtypes)
    built = build_all(launches, rows)
    jobs = []
    for kernel, variant, dtype in rows:
        fn = built[kernel, variant[0]]
        if not isinstance(fn, str):
            launch = launches[dtype][kernel]
            jobs.append(lambda launch=launch, fn=fn: launch.run(launch.tuner.gpu_configs[0], fn=fn, warmup=True))
    done, failed = kl.precompile(jobs, deadline=time.monotonic() + (args.budget_s or 600))
    print(f"ablation precompile: {done} compiled, {failed} failed, of {len(jobs)}", file=sys.stderr)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    kl.add_common_args(parser, budget=True)
    parser.add_argument("--kernels", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--precompile", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.cfg = kl.parse_config(args.config)
    torch.set_float32_matmul_precision("high")
    if args.precompile:
        precompile_child(args)
        return
    budget = report.Budget(args.budget_s)
    emit = report.open_report(f"# Ablation of the Triton kernels at B,S,C,n = {args.config}", __file__, argv, args.out)
    emit("- each kernel variant launched alone with one head step's real arguments and the kernel's first GPU "
         "config; ms = median of triton.testing.do_bench; `vs base` = variant - base (negative: the removed stage's "
         "cost; positive for a doubled stage: its cost where it is on the critical path). Variants compute wrong "
         "values by design. An edit also changes register allocation: compare `regs` / `spills` with the base's "
         "before reading a difference as the stage's cost.")
    child = kl.spawn_precompile(__file__, argv)
    try:
        launches = {dtype: kl.capture(args.cfg, kl.DTYPES[dtype]) for dtype in args.dtypes}
        some = next(iter(launches.values()))
        for kernel in args.kernels:
            emit(f"- {kernel}: config {kl.config_label(some[kernel].tuner.gpu_configs[0])}")
        rows = plan(args.kernels, args.dtypes)
        built = build_all(launches, rows)
        emit(f"- {len(rows)} (variant, dtype) timings planned; budget "
             f"{'none' if args.budget_s is None else f'{args.budget_s:.0f} s'}")
        emit("")
        emit("| kernel | dtype | variant | change | ms | vs base ms | vs base | regs | spills | note |")
        emit("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        base = {}
        for k, (kernel, variant, dtype) in enumerate(rows):
            if budget.spent(reserve=2.0):
                emit(f"| - | - | stopped: time budget spent, {len(rows) - k} timings not measured | | | | | | | |")
                break
            name, what, _ = variant
            label = kl.LABEL[dtype]
            launch = launches[dtype][kernel]
            config = launch.tuner.gpu_configs[0]
            if variant is BASE:                               # the production kernel itself, for reference
                try:
                    regs, spills, _ = kl.resources(launch.run(config))
                    ms = kl.time_ms(lambda launch=launch, config=config: launch.run(config))
                    emit(f"| {kernel} | {label} | production | mn_kernels' own jitted kernel | {ms:.4f} | | | "
                         f"{regs} | {spills} | |")
                except Exception as exc:                      # noqa: BLE001
                    emit(f"| {kernel} | {label} | production | mn_kernels' own jitted kernel | failed | | | | | "
                         f"{report.short_error(exc)} |")
            fn = built[kernel, name]
            if isinstance(fn, str):
                emit(f"| {kernel} | {label} | {name} | {what} | - | | | | | {fn.replace('|', '/')} |")
                continue
            try:
                regs, spills, _ = kl.resources(launch.run(config, fn=fn))
                kl.synchronize()
                ms = kl.time_ms(lambda launch=launch, config=config, fn=fn: launch.run(config, fn=fn))
            except Exception as exc:                          # noqa: BLE001 (a failed variant is a result)
                emit(f"| {kernel} | {label} | {name} | {what} | failed | | | | | {report.short_error(exc)} |")
                continue
            if variant is BASE:
                base[kernel, dtype] = ms
            ref = base.get((kernel, dtype))
            delta = f"{ms - ref:+.4f}" if ref else "-"
            share = f"{100 * (ms - ref) / ref:+.0f}%" if ref else "-"
            emit(f"| {kernel} | {label} | {name} | {what} | {ms:.4f} | {delta} | {share} | {regs} | {spills} | |")
        emit("")
        emit(f"- took {budget.elapsed():.0f} s")
    finally:
        child.kill()
        child.wait()
        emit.close()


if __name__ == "__main__":
    main()
