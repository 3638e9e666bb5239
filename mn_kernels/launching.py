"""What every Triton op of mn_kernels shares at launch: whether the interpreter runs the kernels, the autotuner
over a kernel's candidate configs, the feature limit, the dot-operand dtype, and the SM count the grids fill."""
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


def max_features(dtype: torch.dtype) -> int:
    """The largest n the kernels take for inputs of `dtype`: they hold whole feature rows in a tile (BLOCK_N
    = next power of two >= n), and their ``small`` configs fit an H100's shared memory up to 4 KiB rows in the
    compute dtype (tests/test_sm90_compile.py): n <= 1024 (fp32, bf16, fp16), n <= 512 (fp64)."""
    return 512 if dtype == torch.float64 else 1024


def operand_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of the kernels' dot operands for inputs of `dtype`: their own, except bf16 in the interpreter
    (triton 3.9's interpreter computes bf16 dots wrongly), which goes as fp32."""
    return torch.float32 if INTERPRET and dtype == torch.bfloat16 else dtype


def multiprocessors(device: torch.device) -> int | None:
    """The SM count that the launch grids fill: the GPU's, or None in the interpreter (CPU), where the
    launchers use a few programs to exercise their multi-program paths."""
    if INTERPRET or device.type != "cuda":
        return None
    return torch.cuda.get_device_properties(device).multi_processor_count


def autotune(names, candidates, small, dtype_arg: str = "zh_ptr", restore_value=()):
    """``triton.autotune`` over ``candidates`` then ``small`` (tuples of the meta-parameters ``names``, then
    num_warps and num_stages), keyed by ``KEY``. float64 inputs (the dtype of the pointer argument
    ``dtype_arg``), whose tiles are twice the bytes, get ``small`` alone. With MN_AUTOTUNE=0 the first
    candidate is the only one up to n = 256, ``small`` beyond it and for float64. The interpreter gets one
    small config (tuning there only costs time); ``gpu_configs`` on the kernel keeps the GPU's list either way
    (bench/ tools compile and size grids from it). ``restore_value``: the arguments a kernel reads and writes in
    place, which the tuner's benchmark runs must restore before each run (Triton's option of that name)."""
    def config(c):
        return triton.Config(dict(zip(names, c[:-2])), num_warps=c[-2], num_stages=c[-1])

    def prune(configs, named_args, **kwargs):
        if named_args[dtype_arg].dtype == torch.float64:
            return configs[-1:]
        if _AUTOTUNE:
            return configs
        return configs[:1] if named_args["n"] <= 256 else configs[-1:]      # the first fits up to n = 256

    gpu_configs = [config(c) for c in candidates] + [config(small)]
    if INTERPRET:
        tiny = {"BLOCK_B": 16, "BLOCK_C": 4, "BLOCK_S": 16, "BLOCK_CC": 16}
        tune = triton.autotune(configs=[triton.Config({k: tiny[k] for k in names}, num_warps=1, num_stages=1)],
                               key=KEY)
    else:
        tune = triton.autotune(configs=gpu_configs, key=KEY, prune_configs_by={"early_config_prune": prune},
                               restore_value=list(restore_value))

    def decorate(kernel):
        tuner = tune(kernel)
        tuner.gpu_configs, tuner.in_place = gpu_configs, tuple(restore_value)
        return tuner
    return decorate
