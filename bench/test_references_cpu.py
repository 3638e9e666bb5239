"""pytest-benchmark: one head training step (bench/head_step.py) on the two pure-PyTorch references, float32, CPU.

    python -m pytest bench/test_references_cpu.py --benchmark-json=bench/results/cpu-references.json
    python bench/summarize.py bench/results/cpu-references.json   # markdown table with medians and ratios
"""
import pytest
from head_step import bench_head_step, config_id

CONFIGS = [(128, 1000, 10, 64), (32, 2000, 100, 64)]


@pytest.mark.parametrize("backend", ["torch", "autograd"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=config_id)
def test_head_step(benchmark, cfg, backend):
    bench_head_step(benchmark, cfg, backend)
