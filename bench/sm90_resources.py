"""What the Triton kernels compile to on an H100 (sm_90a), without a GPU: for every autotune candidate of each
kernel, how many of its tensor-core instructions are Hopper's warpgroup MMA (``wgmma``) rather than the older
``mma.sync``, registers per thread, spilled bytes and shared memory. The static check to run before spending
GPU time on a kernel change: a candidate that spills or falls back to ``mma.sync`` for its main dot will not
reach the throughput of docs/design.md, "Performance contract", whatever the autotuner picks.

    python bench/sm90_resources.py [--config 128,10000,100,256] [--dtype float32|bfloat16] [--kernels ...] [--out F.md]

Compiles through Triton's own CUDA backend for GPUTarget("cuda", 90, 128) (nothing is launched), then reads
registers and spills from the ptxas that Triton ships (``ptxas-blackwell`` understands the PTX version
recent Triton emits; the plain ``ptxas`` is tried otherwise).
"""
from __future__ import annotations

import argparse
import datetime
import os
import re
import subprocess
import tempfile
from collections.abc import Collection, Sequence

os.environ.pop("TRITON_INTERPRET", None)          # real compiles; the interpreter would compile nothing
import torch  # noqa: E402
import triton  # noqa: E402
from report import Sink, short_error  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

import mn_kernels.inner_gradient.launch as kernels  # noqa: E402

KERNELS = ("lse_kernel", "fwd_kernel", "bwd_kernel")
# Pointers that carry dot operands: they have the input dtype, every other pointer fp32 (fp64 for fp64 inputs).
OPERAND_POINTERS = frozenset({"zh_ptr", "keys_ptr", "h_ptr"})
# The cells of a candidate's row after the leading ones (kernel, or dtype and kernel): tests/test_sm90_compile.py
# reads them by position.
COLUMNS = ("config", "warps", "stages", "wgmma", "mma.sync", "registers", "spilled bytes", "shared KiB")
TRITON_TYPE = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "float64": "fp64"}


def ptxas_binary() -> str:
    nvidia_bin = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    for name in ("ptxas-blackwell", "ptxas"):
        if os.path.exists(os.path.join(nvidia_bin, name)):
            return os.path.join(nvidia_bin, name)
    return "ptxas"


def compile_config(jit_fn, config: triton.Config, *, shape: tuple[int, int, int, int], dtype: str,
                   operand_pointers: Collection[str] = OPERAND_POINTERS) -> dict:
    """Compiles one autotune candidate for sm_90a at problem `shape` (B, S, C, n); returns its resource counts.

    Arguments are specialised as Triton's JIT does at launch: pointers 16-byte aligned, integer arguments
    that are multiples of 16 marked so (what lets loads and stores vectorise), none of `do_not_specialize`.
    Pointers in `operand_pointers` have the `dtype` of the operands, the others fp32 (fp64 for float64)."""
    B, S, C, n = shape
    ints = dict(B=B, S=S, C=C, n=n, s_bucket=triton.next_power_of_2(S), entries_per_split=128)
    unspecialised = {jit_fn.arg_names[i] if isinstance(i, int) else i for i in jit_fn.do_not_specialize}
    op_type = TRITON_TYPE[dtype]
    signature, attrs = {}, {}
    for index, param in enumerate(jit_fn.params):
        if param.is_constexpr:
            signature[param.name] = "constexpr"
            continue
        if param.name.endswith("_ptr"):
            side_type = "fp64" if dtype == "float64" else "fp32"     # per-entry arrays, accumulators
            signature[param.name] = f"*{op_type}" if param.name in operand_pointers else f"*{side_type}"
            aligned = True
        else:
            signature[param.name] = "i32"
            aligned = param.name not in unspecialised and ints[param.name] % 16 == 0
        if aligned:
            attrs[(index,)] = [["tt.divisibility", 16]]
    constexprs = dict(config.kwargs, BLOCK_N=max(16, triton.next_power_of_2(n)), HAS_DROPOUT=False,
                      PRECISION="tf32" if dtype == "float32" else "ieee")
    constexprs = {k: v for k, v in constexprs.items() if k in signature}
    compiled = triton.compile(ASTSource(fn=jit_fn, signature=signature, constexprs=constexprs, attrs=attrs),
                              target=GPUTarget("cuda", 90, 128),
                              options=dict(num_warps=config.num_warps, num_stages=config.num_stages))
    ptx = compiled.asm["ptx"]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        report = subprocess.run([ptxas_binary(), "-arch=sm_90a", "-v", path, "-o", os.devnull],
                                capture_output=True, text=True).stderr
    regs = re.search(r"Used (\d+) registers", report)
    spills = re.search(r"(\d+) bytes spill stores", report)
    return dict(wgmma=ptx.count("wgmma.mma_async"), mma_sync=len(re.findall(r"\bmma\.sync", ptx)),
                regs=int(regs.group(1)) if regs else None, spills=int(spills.group(1)) if spills else None,
                shared_kib=compiled.metadata.shared / 1024)


def select(configs: Sequence, which: str) -> Sequence:
    """All candidates, or only the first (what MN_AUTOTUNE=0 runs) or the last (the small fallback)."""
    return {"all": configs, "first": configs[:1], "last": configs[-1:]}[which]


def add_which_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--which", default="all", choices=["all", "first", "last"],
                        help="all candidates, or only the first (what MN_AUTOTUNE=0 runs) or the last (the small "
                             "fallback) of each kernel")


def table_header(lead: Sequence[str]) -> list[str]:
    """The candidates' table header, `lead` (the leading columns' names) first."""
    names = [*lead, *COLUMNS]
    return ["| " + " | ".join(names) + " |", "|" + " --- |" * len(names)]


def candidate_row(lead: Sequence[str], jit_fn, config: triton.Config, *, shape: tuple[int, int, int, int],
                  dtype: str, operand_pointers: Collection[str] = OPERAND_POINTERS) -> str:
    """One candidate's table row: the `lead` cells, then COLUMNS; a candidate that does not compile is
    reported in the row (`compile error: ...`), not raised."""
    try:
        r = compile_config(jit_fn, config, shape=shape, dtype=dtype, operand_pointers=operand_pointers)
        result = [r["wgmma"], r["mma_sync"], r["regs"], r["spills"], f"{r['shared_kib']:.0f}"]
    except Exception as exc:                                  # noqa: BLE001 (a failed compile is a result)
        result = [f"compile error: {short_error(exc, 120)}", "", "", "", ""]
    cells = [*lead, config.kwargs, config.num_warps, config.num_stages, *result]
    return "| " + " | ".join(map(str, cells)) + " |"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="128,10000,100,256", help="B,S,C,n: sets BLOCK_N and the "
                        "divisibility specialisation of the integer arguments")
    parser.add_argument("--dtype", default="float32", choices=sorted(TRITON_TYPE))
    parser.add_argument("--kernels", default=",".join(KERNELS))
    add_which_arg(parser)
    parser.add_argument("--out", help="append the markdown table to this file")
    args = parser.parse_args(argv)
    shape = tuple(int(v) for v in args.config.split(","))
    emit = Sink(args.out, mode="a")
    try:
        emit(f"### sm_90a compiles, (B,S,C,n) = ({args.config}), {args.dtype} operands "
             f"({datetime.date.today()}, triton {triton.__version__}, {os.path.basename(ptxas_binary())})")
        emit("")
        for line in table_header(["kernel"]):
            emit(line)
        for name in args.kernels.split(","):
            tuner = getattr(kernels, name)
            # The candidates the launcher would tune for this dtype (float64 inputs get their own config).
            # (each kernel's autotuner reads the dtype of one pointer argument: the operands' or the compute dtype's)
            operand, side = getattr(torch, args.dtype), torch.float64 if args.dtype == "float64" else torch.float32
            probe = {"zh_ptr": torch.empty(0, dtype=operand), "ph_ptr": torch.empty(0, dtype=operand),
                     "wh_ptr": torch.empty(0, dtype=side), "n": shape[3]}
            for config in select(tuner.early_config_prune(tuner.configs, probe), args.which):
                emit(candidate_row([name], tuner.fn, config, shape=shape, dtype=args.dtype))
        emit("")
    finally:
        emit.close()


if __name__ == "__main__":
    main()
