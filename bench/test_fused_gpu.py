"""pytest-benchmark on a GPU: one head training step (bench/head_step.py) on the fused Triton kernels, the native
CUDA kernels and the two references, float32 with TF32 matmuls, at the issue's CIFAR-style configs; skipped
without CUDA. The fuller table (forward / backward split, bf16, memory, TFLOP/s) is bench/bench_gpu.py.

    python -m pytest bench/test_fused_gpu.py --benchmark-json=bench/results/gpu-fused.json
    python bench/summarize.py bench/results/gpu-fused.json
"""
import pytest
import torch
from head_step import bench_head_step, config_id

import mn

CONFIGS = [(128, 5000, 10, 256), (128, 10000, 100, 256), (512, 10000, 100, 256)]
BACKENDS = ["triton", "native", "torch", "autograd"]

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cfg", CONFIGS, ids=config_id)
def test_head_step(benchmark, cfg, backend):
    why = mn.available_backends("cuda")[backend]
    if why is not None:
        pytest.skip(f"{backend}: {why}")
    torch.set_float32_matmul_precision("high")
    bench_head_step(benchmark, cfg, backend, rounds=20, device="cuda")
