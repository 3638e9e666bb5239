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
from report import Sink  # noqa: E402

import mn_kernels.later_step.launch as launch  # noqa: E402

KERNELS = ("stats_kernel", "fwd_kernel", "bwd_stats_kernel", "bwd_query_kernel", "bwd_entry_kernel")
# The per-example weights are a dot operand here too.
OPERAND_POINTERS = sm90_resources.OPERAND_POINTERS | {"ph_ptr"}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="128,10000,100,256", help="B,S,C,n")
    parser.add_argument("--dtypes", nargs="+", choices=sorted(sm90_resources.TRITON_TYPE),
                        default=["float32", "bfloat16"])
    sm90_resources.add_which_arg(parser)
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args(argv)
    shape = tuple(int(v) for v in args.config.split(","))
    emit = Sink(args.out)
    try:
        emit(f"### Later-step kernels, sm_90a compiles, (B,S,C,n) = ({args.config}) ({datetime.date.today()}, "
             f"triton {triton.__version__})")
        emit("")
        for line in sm90_resources.table_header(["dtype", "kernel"]):
            emit(line)
        for dtype in args.dtypes:
            for name in KERNELS:
                kernel = getattr(launch, name)
                for config in sm90_resources.select(kernel.gpu_configs, args.which):
                    emit(sm90_resources.candidate_row([dtype, name], kernel.fn, config, shape=shape, dtype=dtype,
                                                      operand_pointers=OPERAND_POINTERS))
    finally:
        emit.close()


if __name__ == "__main__":
    main()
