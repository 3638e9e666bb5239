"""What the later-step Triton kernels (mn_kernels/later_step) compile to on an H100 (sm_90a), without a GPU: every
autotune candidate at one problem size and operand dtype, with bench/sm90_resources.py's compile (wgmma use,
registers, spills, shared memory against the 227 KiB an H100 block may use).

    python bench/sm90_later_step.py [--config 128,10000,100,256] [--dtypes float32 bfloat16] [--out F.md]
"""
import argparse
import datetime
import os
import sys
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)          # real compiles; the interpreter would compile nothing
sys.path.insert(0, str(Path(__file__).resolve().parent))
import sm90_resources  # noqa: E402
import triton  # noqa: E402

import mn_kernels.later_step.launch as launch  # noqa: E402

KERNELS = ("stats_kernel", "fwd_kernel", "bwd_stats_kernel", "bwd_query_kernel", "bwd_entry_kernel")
sm90_resources.OPERAND_POINTERS |= {"ph_ptr"}     # the per-example weights are a dot operand here too


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="128,10000,100,256", help="B,S,C,n")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--which", default="all", choices=["all", "first", "last"],
                        help="all candidates, or only the first (what MN_AUTOTUNE=0 runs) or the last (the small "
                             "fallback) of each kernel")
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args(argv)
    shape = tuple(int(v) for v in args.config.split(","))
    lines = [f"### Later-step kernels, sm_90a compiles, (B,S,C,n) = ({args.config}) ({datetime.date.today()}, "
             f"triton {triton.__version__})", "",
             "| dtype | kernel | config | warps | stages | wgmma | mma.sync | registers | spilled bytes | shared KiB |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for dtype in args.dtypes:
        for name in KERNELS:
            configs = getattr(launch, name).gpu_configs
            for config in {"all": configs, "first": configs[:1], "last": configs[-1:]}[args.which]:
                try:
                    r = sm90_resources.compile_config(getattr(launch, name).fn, config, shape=shape, dtype=dtype)
                    row = f"{r['wgmma']} | {r['mma_sync']} | {r['regs']} | {r['spills']} | {r['shared_kib']:.0f}"
                except Exception as e:  # reported, not fatal
                    row = f"compile error: {str(e).splitlines()[0][:100]} | | | |"
                cells = f"{dtype} | {name} | {config.kwargs} | {config.num_warps} | {config.num_stages}"
                lines.append(f"| {cells} | {row} |")
                print(lines[-1], flush=True)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
