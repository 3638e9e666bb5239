"""The benchmark the pytest-benchmark suites run: one training step of MetaNeighborhoodsHead (adapted logits,
outer cross-entropy, backward through the inner step), float32, on CPU or a GPU."""
import torch
import torch.nn.functional as F

import mn


def config_id(cfg) -> str:
    return "B{}-S{}-C{}-n{}".format(*cfg)


def bench_head_step(benchmark, cfg, backend: str, rounds: int = 7, device: str = "cpu", **extra_info) -> None:
    """Times the step on `backend` at cfg = (B, S, C, n); results grouped by config, backend in extra_info.
    On a GPU each timed step ends with a synchronisation, so the time is the GPU's, not the launch's."""
    B, S, C, n = cfg
    torch.manual_seed(0)
    head = mn.MetaNeighborhoodsHead(n, C, num_entries=S, backend=backend).to(device)
    z = torch.randn(B, n, device=device, requires_grad=True)
    y = torch.randint(0, C, (B,), device=device)

    def step():
        head.zero_grad(set_to_none=True)
        F.cross_entropy(head(z), y).backward()
        if device != "cpu":
            torch.cuda.synchronize()

    benchmark.group = config_id(cfg)
    benchmark.extra_info.update(B=B, S=S, C=C, n=n, backend=backend, torch=torch.__version__,
                                threads=torch.get_num_threads(), device=device, **extra_info)
    benchmark.pedantic(step, rounds=rounds, iterations=1, warmup_rounds=1)
