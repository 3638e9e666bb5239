"""One real launch of each Triton kernel of the head step, captured so that it can be launched again with any
config or any variant of the kernel: the common ground of bench/sweep_gpu.py (every autotune candidate),
bench/ablate_gpu.py (kernel variants) and the ncu step of bench/gpu_check.sh.

The capture wraps the three autotuner objects of mn_kernels/inner_gradient/launch.py (as profile_gpu.py's
record_launches does), runs one head step on `triton` and keeps each kernel's last arguments. The scripts
that capture set MN_AUTOTUNE=0 before they import this module, so each kernel is launched once with its first
candidate and nothing is benchmarked.

Run as a script it is the program that ncu profiles: one head step per dtype at one config, nothing else
(three kernel launches per dtype, each with its first autotune candidate):

    python bench/kernel_launches.py [--config 128,10000,100,256] [--dtypes float32 bfloat16]

Without a GPU the kernels run in Triton's interpreter (a dry run: tiny configs only).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import os
import subprocess
import sys
import time

import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")
if __name__ == "__main__":                          # the ncu program: each kernel once, its first candidate
    os.environ.setdefault("MN_AUTOTUNE", "0")         # (read when mn_kernels is imported)
import torch.nn.functional as F
import triton
import triton.testing
from bench_gpu import make_head_inputs
from report import add_budget_arg

import mn
import mn_kernels.inner_gradient.launch as kernels

KERNELS = ("lse_kernel", "fwd_kernel", "bwd_kernel")
# Arguments each kernel writes (checked after a re-launch); a `_part` output is compared summed over its first
# axis (per-program partials whose split depends on the config). Names the kernel no longer has are skipped.
OUTPUTS = {"lse_kernel": ("m_ptr", "l_ptr"), "fwd_kernel": ("grad_ptr", "loss_ptr", "a_ptr"),
           "bwd_kernel": ("dkh_ptr", "dce_ptr", "ddeltaT_ptr", "dzh_part_ptr")}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
LABEL = {"float32": "tf32", "bfloat16": "bf16"}


def parse_config(text: str) -> tuple[int, int, int, int]:
    B, S, C, n = (int(v) for v in text.split(","))
    return B, S, C, n


def config_kwargs(config) -> dict:
    """A triton.Config as launch keyword arguments: its meta-parameters, num_warps, num_stages (and whatever
    else the installed Triton keeps in it)."""
    if hasattr(config, "all_kwargs"):
        return config.all_kwargs()
    return dict(config.kwargs, num_warps=config.num_warps, num_stages=config.num_stages)


def config_label(config) -> str:
    meta = ", ".join(f"{k}={v}" for k, v in config.kwargs.items())
    return f"{meta}, warps={config.num_warps}, stages={config.num_stages}"


class Launch:
    """One captured launch of an autotuned kernel: its positional arguments, its keyword arguments (constants
    and constexprs, without the autotuned ones) and its grid."""

    def __init__(self, name, tuner, args, kwargs):
        self.name, self.tuner, self.args = name, tuner, tuple(args)
        kwargs = dict(kwargs)
        self.grid = kwargs.pop("grid")
        kwargs.pop("warmup", None)
        self.kwargs = kwargs
        self.fn = tuner.fn                                    # the JITFunction (InterpretedFunction on CPU)
        self.arg_names = list(getattr(tuner, "arg_names", None) or self.fn.arg_names)

    def run(self, config, fn=None, warmup=False):
        """Launches `fn` (default: the production kernel) with these arguments and `config`; returns what the
        JIT returns (the CompiledKernel on a GPU, None in the interpreter). warmup=True compiles only."""
        fn = fn if fn is not None else self.fn
        return fn.run(*self.args, grid=self.grid, warmup=warmup, **self.kwargs, **config_kwargs(config))

    def outputs(self) -> dict:
        named = dict(zip(self.arg_names, self.args))
        return {name: named[name] for name in OUTPUTS.get(self.name, ()) if torch.is_tensor(named.get(name))}

    def zero_outputs(self) -> None:
        for t in self.outputs().values():
            t.zero_()

    def snapshot(self) -> dict:
        """The outputs as they are now (partials summed), for comparing configs."""
        return {name: (t.sum(0) if name.endswith("_part_ptr") else t).detach().double().clone()
                for name, t in self.outputs().items()}


def max_rel_diff(a: dict, b: dict) -> float:
    """max over outputs of max|a - b| / max|b| (NaN if any is NaN)."""
    worst = 0.0
    for name, ref in b.items():
        got = a.get(name)
        if got is None:
            continue
        scale = ref.abs().max().item() or 1.0
        diff = (got - ref).abs().max().item() / scale
        if diff != diff:
            return float("nan")
        worst = max(worst, diff)
    return worst


def capture(cfg, dtype: torch.dtype) -> dict[str, Launch]:
    """Runs one head step (adapted logits, CE, backward) on `triton` at cfg = (B, S, C, n) with inputs of
    `dtype` and returns the last launch of each kernel: name -> Launch. The tensors stay alive with it."""
    captured = {}
    for name in KERNELS:
        tuner = getattr(kernels, name)

        def run(*args, _name=name, _tuner=tuner, _run=tuner.run, **kwargs):
            captured[_name] = Launch(_name, _tuner, args, kwargs)
            return _run(*args, **kwargs)
        tuner.run = run
    checks = mn.set_value_checks(False)
    try:
        B, S, C, n = cfg
        (z, keys, values, weight, tau, alpha), target = make_head_inputs(B, S, C, n, dtype)
        logits = mn.adapted_logits(z, keys, values, weight, tau, alpha, gamma=5.0, backend="triton")
        F.cross_entropy(logits.float(), target).backward()
        synchronize()
    finally:
        mn.set_value_checks(checks)
        for name in KERNELS:
            vars(getattr(kernels, name)).pop("run", None)       # the class's run again
    missing = [name for name in KERNELS if name not in captured]
    if missing:
        raise RuntimeError(f"the head step launched no {missing}: mn_kernels' launcher changed")
    return captured


def synchronize() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def time_ms(fn) -> float:
    """Median ms of fn(): triton.testing.do_bench on a GPU (events, L2 flushed between calls); on the CPU
    (interpreter dry run) one timed call: the number only proves the path runs."""
    if DEVICE == "cuda":
        return triton.testing.do_bench(fn, warmup=10, rep=50, return_mode="median")
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def resources(compiled) -> tuple:
    """(registers / thread, spilled bytes, shared KiB) of a CompiledKernel; 'n/a' each in the interpreter."""
    if compiled is None or not hasattr(compiled, "_init_handles"):
        return ("n/a", "n/a", "n/a")
    try:
        compiled._init_handles()
    except Exception:                                         # noqa: BLE001 (resources are a side note)
        return ("n/a", "n/a", "n/a")
    shared = getattr(getattr(compiled, "metadata", None), "shared", None)
    return (getattr(compiled, "n_regs", "n/a"), getattr(compiled, "n_spills", "n/a"),
            "n/a" if shared is None else f"{shared / 1024:.1f}")


def add_common_args(parser: argparse.ArgumentParser, *, budget: bool = False) -> None:
    """--config, --dtypes, --out (and with budget=True --budget-s) of the scripts built on these launches."""
    parser.add_argument("--config", default="128,10000,100,256", help="B,S,C,n")
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["float32", "bfloat16"])
    parser.add_argument("--out", help="also write the tables to this file")
    if budget:
        add_budget_arg(parser)


def spawn_precompile(script: str, argv: list[str]) -> subprocess.Popen:
    """Starts `script` (a __file__) again with `argv` and --precompile: the background process that compiles
    ahead what the script will time (also on the CPU, where the interpreter compiles nothing: so the dry run
    exercises it). The caller kills it when done."""
    return subprocess.Popen([sys.executable, os.path.abspath(script), *argv, "--precompile"],
                            stdout=subprocess.DEVNULL)


def precompile(jobs, workers: int | None = None, deadline: float | None = None) -> tuple[int, int]:
    """Compiles ahead, in threads: each job is a callable that launches with warmup=True (compile only, into
    Triton's on-disk cache, so the timed launches that follow find their binary there). Triton's compiler
    passes and ptxas run outside the GIL for the most part, so threads overlap compiles. Errors are left for
    the real launch to report. Threads: `workers`, else $MN_PRECOMPILE_THREADS, else one per core but one.
    Returns (compiled, failed)."""
    if not jobs:
        return 0, 0
    workers = workers or int(os.environ.get("MN_PRECOMPILE_THREADS", 0)) or max(1, min(16, (os.cpu_count() or 2) - 1))
    done = failed = 0
    pool = concurrent.futures.ThreadPoolExecutor(workers)
    futures = [pool.submit(job) for job in jobs]                 # submitted in order: the first finish first
    try:
        for future in futures:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                future.result(timeout=timeout)
                done += 1
            except concurrent.futures.TimeoutError:
                break
            except Exception:                                 # noqa: BLE001 (reported at launch)
                failed += 1
    finally:
        pool.shutdown(wait=False, cancel_futures=True)        # past the deadline: leave running compiles behind
    return done, failed


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="128,10000,100,256", help="B,S,C,n")
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["float32", "bfloat16"])
    args = parser.parse_args(argv)
    torch.set_float32_matmul_precision("high")                # TF32 dots for fp32 inputs, as in the table
    cfg = parse_config(args.config)
    for dtype in args.dtypes:
        start = time.perf_counter()
        launches = capture(cfg, DTYPES[dtype])
        chosen = {name: config_label(launch.tuner.best_config) if getattr(launch.tuner, "best_config", None)
                  else "?" for name, launch in launches.items()}
        print(f"{dtype}: one head step at {args.config} in {time.perf_counter() - start:.2f} s; "
              f"configs {chosen}", file=sys.stderr)


if __name__ == "__main__":
    main()
