"""Launch configurations of the inner-gradient kernels and the autotuner that chooses among them.

Each kernel has a list of candidates, best first, chosen from offline sm_90a compiles at (B, S, C, n) =
(128, 10000, 100, 256) (`python bench/sm90_resources.py`; register, spill and shared-memory counts in
bench/results/sm90-static.md), and a `small` config that fits an H100's shared memory up to the largest n
(`max_features`): the tuner falls back to it where the candidates do not fit, and float64 gets it alone.
"""
import os

import torch
import triton

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
# MN_AUTOTUNE=0 keeps the first candidate of each kernel: for test runs, where tuning every new shape would
# cost more compile time than the tests themselves.
_AUTOTUNE = os.environ.get("MN_AUTOTUNE", "1") != "0"

# Autotune keys: a power-of-two bucket of S, C and n -- never B, so batch-size changes reuse the tuning; B is
# also exempt from Triton's integer specialisation (B % 16, B == 1), so no batch size triggers a recompile.
KEY = ["s_bucket", "C", "n"]

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


def max_features(dtype: torch.dtype) -> int:
    """The largest n the kernels take for inputs of `dtype`: they hold whole feature rows in a tile (BLOCK_N
    = next power of two >= n), and their ``small`` configs fit an H100's shared memory up to 4 KiB rows in the
    compute dtype (tests/test_sm90_compile.py): n <= 1024 (fp32, bf16, fp16), n <= 512 (fp64)."""
    return 512 if dtype == torch.float64 else 1024


def autotune(names, candidates, small):
    """``triton.autotune`` over ``candidates`` then ``small`` (tuples of the meta-parameters ``names``, then
    num_warps and num_stages), keyed by ``KEY``. float64 inputs, whose tiles are twice the bytes, get ``small``
    alone. With MN_AUTOTUNE=0 the first candidate is the only one up to n = 256, ``small`` beyond it and for
    float64. The interpreter gets one small config (tuning there only costs time); ``gpu_configs`` on the
    kernel keeps the GPU's list either way (bench/ tools compile and size grids from it)."""
    def config(c):
        return triton.Config(dict(zip(names, c[:-2])), num_warps=c[-2], num_stages=c[-1])

    def prune(configs, named_args, **kwargs):
        if named_args["zh_ptr"].dtype == torch.float64:
            return configs[-1:]
        if _AUTOTUNE:
            return configs
        return configs[:1] if named_args["n"] <= 256 else configs[-1:]      # the first fits up to n = 256

    gpu_configs = [config(c) for c in candidates] + [config(small)]
    if INTERPRET:
        tiny = {"BLOCK_B": 16, "BLOCK_C": 4, "BLOCK_S": 16}
        tune = triton.autotune(configs=[triton.Config({k: tiny[k] for k in names}, num_warps=1, num_stages=1)],
                               key=KEY)
    else:
        tune = triton.autotune(configs=gpu_configs, key=KEY, prune_configs_by={"early_config_prune": prune})

    def decorate(kernel):
        tuner = tune(kernel)
        tuner.gpu_configs = gpu_configs
        return tuner
    return decorate
