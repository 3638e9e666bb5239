"""Launch configurations of the later-step kernels (the autotuner: mn_kernels/launching.py).

Candidates, best first, from offline sm_90a compiles at (B, S, C, n) = (128, 10000, 100, 256) with fp32 (TF32)
and bf16 operands (bench/results/sm90-static-later.md): the first of each fits an H100's 227 KiB of shared memory
with both, and the row-block kernels keep 16 queries per block because their (BLOCK_B*BLOCK_C) x n operand and
accumulator spill at 32. Not yet timed on a GPU. The `small` configs fit up to the largest n.
"""
import torch


def max_features(dtype: torch.dtype) -> int:
    """The largest n the later-step kernels take: their row-block kernels hold three (rows x n) operands and
    accumulators of the per-example weights besides the key tile, so their `small` configs fit 227 KiB of shared
    memory up to n = 512 (fp32, bf16, fp16) and 256 (fp64) (bench/results/sm90-static-later.md), half of step 1's."""
    return 256 if dtype == torch.float64 else 512


# (meta-parameter values..., num_warps, num_stages).
STATS_NAMES = ("BLOCK_B", "BLOCK_S")                       # stats_kernel
STATS_CONFIGS = [(64, 64, 8, 2), (32, 64, 8, 2)]
STATS_SMALL = (16, 16, 4, 1)
ROW_NAMES = ("BLOCK_B", "BLOCK_C", "BLOCK_S")              # fwd_kernel, bwd_query_kernel
FWD_CONFIGS = [(16, 4, 64, 8, 1), (16, 4, 32, 8, 1), (16, 2, 64, 8, 1)]
QUERY_CONFIGS = [(16, 2, 64, 8, 1), (16, 2, 32, 8, 1), (16, 4, 64, 8, 1)]
ROW_SMALL = (16, 1, 16, 4, 1)
BWD_STATS_CONFIGS = [(16, 64, 8, 1), (16, 32, 4, 1)]       # bwd_stats_kernel (STATS_NAMES)
ENTRY_NAMES = ("BLOCK_B", "BLOCK_S")                       # bwd_entry_kernel; the grid is sized by the largest
ENTRY_CONFIGS = [(16, 64, 8, 1), (32, 64, 8, 1)]           # BLOCK_S here
ENTRY_SMALL = (16, 16, 8, 1)
