"""Launch configurations of the later-step kernels (the autotuner: mn_kernels/launching.py).

Not yet tuned on a GPU: the candidates follow step 1's (mn_kernels/inner_gradient/configs.py), 64-entry tiles for
wgmma and 4-class blocks for the row-block kernels, with a `small` config that fits up to the largest n.
"""
# (meta-parameter values..., num_warps, num_stages).
STATS_NAMES = ("BLOCK_B", "BLOCK_S")
STATS_CONFIGS = [(32, 64, 8, 2), (16, 64, 4, 2)]
STATS_SMALL = (16, 16, 4, 1)
ROW_NAMES = ("BLOCK_B", "BLOCK_C", "BLOCK_S")             # fwd_kernel and bwd_query_kernel
ROW_CONFIGS = [(16, 4, 64, 8, 2), (32, 2, 64, 8, 2)]
ROW_SMALL = (16, 1, 16, 4, 1)
ENTRY_NAMES = ("BLOCK_B", "BLOCK_S")                       # bwd_entry_kernel; the grid is sized by the largest
ENTRY_CONFIGS = [(32, 64, 8, 1), (16, 64, 8, 1)]           # BLOCK_S here
ENTRY_SMALL = (16, 16, 8, 1)
