"""pytest-benchmark: one training step of the Meta-Neighborhoods head (forward, outer CE loss, backward through the
inner step) on the two pure-PyTorch references, float32, CPU.

    python -m pytest bench/test_references_cpu.py --benchmark-json=bench/results/cpu-references.json
    python bench/summarize.py bench/results/cpu-references.json   # markdown table with medians and ratios
"""
import pytest
import torch
import torch.nn.functional as F

import mn

CONFIGS = [(128, 1000, 10, 64), (32, 2000, 100, 64)]


def _id(cfg):
    return "B{}-S{}-C{}-n{}".format(*cfg)


@pytest.mark.parametrize("backend", ["torch", "autograd"])
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
    benchmark.extra_info.update(B=B, S=S, C=C, n=n, backend=backend, torch=torch.__version__, threads=torch.get_num_threads())
    benchmark.pedantic(step, rounds=7, iterations=1, warmup_rounds=1)
