"""pytest-benchmark: one training step of the Meta-Neighborhoods head (forward, outer CE loss, backward through the
inner step) on the native CPU kernels (mn._C) and on the closed-form `torch` reference, float32, CPU, measured in
the same run. The goal (issue 4) is native >= 1.5x faster than `torch` at equal precision on 2 cores.

    python -m pytest bench/test_native_cpu.py --benchmark-json=bench/results/cpu-native.json
    python bench/summarize.py bench/results/cpu-native.json   # markdown table with medians and ratios
"""
import pytest
import torch
import torch.nn.functional as F

import mn

CONFIGS = [(128, 1000, 10, 64), (32, 2000, 100, 64), (128, 10000, 100, 256)]
ROUNDS = {(128, 10000, 100, 256): 3}   # ~1-10 s per step there


def _id(cfg):
    return "B{}-S{}-C{}-n{}".format(*cfg)


@pytest.mark.skipif(mn.available_backends("cpu")["native"] is not None, reason="native backend unavailable")
@pytest.mark.parametrize("backend", ["native", "torch"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=_id)
def test_head_step(benchmark, cfg, backend):
    B, S, C, n = cfg
    torch.manual_seed(0)
    head = mn.MetaNeighborhoodsHead(n, C, num_entries=S, backend=backend)
    z = torch.randn(B, n, requires_grad=True)
    y = torch.randint(0, C, (B,))

    def step():
        head.zero_grad(set_to_none=True)
        F.cross_entropy(head(z), y).backward()

    benchmark.group = _id(cfg)
    isa = mn.native_ops._extension().cpu_isa() if backend == "native" else None
    benchmark.extra_info.update(B=B, S=S, C=C, n=n, backend=backend, torch=torch.__version__, threads=torch.get_num_threads(), isa=isa)
    benchmark.pedantic(step, rounds=ROUNDS.get(cfg, 7), iterations=1, warmup_rounds=1)
