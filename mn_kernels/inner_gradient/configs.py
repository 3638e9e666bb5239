"""Launch configurations of the inner-gradient kernels (the autotuner that chooses among them:
mn_kernels/launching.py).

Each kernel has a list of candidates, best first, chosen from offline sm_90a compiles at (B, S, C, n) =
(128, 10000, 100, 256) (`python bench/sm90_resources.py`; register, spill and shared-memory counts in
bench/results/sm90-static.md), and a `small` config that fits an H100's shared memory up to the largest n
(`max_features`): the tuner falls back to it where the candidates do not fit, and float64 gets it alone.
"""
# (meta-parameter values..., num_warps, num_stages).
# lse: query blocks x entry tiles of the scores only.
LSE_NAMES = ("BLOCK_B", "BLOCK_S")
LSE_CONFIGS = [(32, 64, 8, 3), (16, 64, 4, 3), (64, 64, 8, 2)]
LSE_SMALL = (16, 16, 4, 1)
# forward: BLOCK_C = 4 classes per program keeps the (BLOCK_B*BLOCK_C) x n accumulator in registers at n = 256
# and gives the grid a class-block axis (parallelism for small batches), for recomputing the scores once per
# class block; the last candidate puts every dot on wgmma (64 queries, one class).
FWD_NAMES = ("BLOCK_B", "BLOCK_C", "BLOCK_S")
FWD_CONFIGS = [(16, 4, 64, 8, 3), (16, 4, 64, 8, 2), (32, 2, 64, 8, 2), (64, 1, 128, 8, 2)]
FWD_SMALL = (16, 1, 16, 4, 1)
# backward: BLOCK_S = 64 entries is the M side of both per-class dots, the smallest that Hopper's warpgroup
# MMA (wgmma) takes; 8 warps put both on wgmma. The launcher sizes its grid from the largest BLOCK_S here.
BWD_NAMES = ("BLOCK_B", "BLOCK_S")
BWD_CONFIGS = [(32, 64, 8, 1), (32, 64, 8, 2), (16, 64, 8, 1)]
BWD_SMALL = (16, 16, 8, 1)
# per-entry kernels (entries.py): entry tiles x chunks of classes; a few percent of the step's flops.
ENTRY_NAMES = ("BLOCK_S", "BLOCK_CC")
ENTRY_CONFIGS = [(64, 32, 8, 1), (32, 32, 4, 1)]
ENTRY_SMALL = (16, 16, 4, 1)
