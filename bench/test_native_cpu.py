"""pytest-benchmark: one head training step (bench/head_step.py) on the native CPU kernels (mn._C) and on the
closed-form `torch` reference, float32, CPU, measured in the same run. The goal (issue 4) is native >= 1.5x
faster than `torch` at equal precision on 2 cores.

    python -m pytest bench/test_native_cpu.py --benchmark-json=bench/results/cpu-native.json
    python bench/summarize.py bench/results/cpu-native.json   # markdown table with medians and ratios
"""
import pytest
from head_step import bench_head_step, config_id

import mn

CONFIGS = [(128, 1000, 10, 64), (32, 2000, 100, 64), (128, 10000, 100, 256)]
ROUNDS = {(128, 10000, 100, 256): 3}   # the slowest config: few rounds


@pytest.mark.skipif(mn.available_backends("cpu")["native"] is not None, reason="native backend unavailable")
@pytest.mark.parametrize("backend", ["native", "torch"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=config_id)
def test_head_step(benchmark, cfg, backend):
    isa = mn.native_ops._extension().cpu_isa() if backend == "native" else None
    bench_head_step(benchmark, cfg, backend, rounds=ROUNDS.get(cfg, 7), isa=isa)
