"""On a GPU, Triton's autotuner benchmarks each config on the real arguments before the run that counts, so a
kernel may run several times on the same buffers. A kernel that reads and writes a buffer in place must name it
(`restore_value`, kept as `in_place` on the tuner) so the tuner restores it between runs. Here every autotuned
kernel runs twice per launch, its in-place arguments restored in between as the tuner does: the op's results
must be those of one run. (The interpreter has one config, so the tuner never reruns anything on the CPU.)"""
import pytest
import torch

import mn
from mn.memory_accounting import KernelsSkipped

from helpers import make_alpha, make_inputs

pytest.importorskip("triton")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


class RunTwice:
    """kernel[grid](*args) runs the kernel, restores its `in_place` arguments, and runs it again."""

    def __init__(self, tuner, name: str, launched: set):
        self.tuner, self.name, self.launched = tuner, name, launched

    def __getattr__(self, name):                    # configs, gpu_configs: the launchers size grids from them
        return getattr(self.tuner, name)

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.launched.add(self.name)
            named = dict(zip(self.tuner.arg_names, args), **kwargs)
            saved = {name: named[name].clone() for name in self.tuner.in_place}
            self.tuner[grid](*args, **kwargs)
            for name, copy in saved.items():
                named[name].copy_(copy)
            self.tuner[grid](*args, **kwargs)
        return launch


def _outputs(inner_steps):
    z, keys, values, weight, tau = make_inputs(5, 70, 3, 6, seed=3, requires_grad=True, device=DEVICE)
    alpha = make_alpha("feature", 3, 6).to(DEVICE)
    logits = mn.adapted_logits(z, keys, values, weight, tau, alpha, gamma=5.0, inner_steps=inner_steps,
                               backend="triton")
    weights = torch.linspace(-1, 1, logits.numel(), dtype=logits.dtype, device=DEVICE).view_as(logits)
    grads = torch.autograd.grad((logits * weights).sum(),
                                (z, keys, values, weight, tau, alpha))
    return [logits.detach(), *grads]


@pytest.mark.parametrize("inner_steps", [1, 3])
def test_every_autotuned_kernel_survives_the_tuners_reruns(monkeypatch, inner_steps):
    import importlib
    if mn.available_backends(DEVICE)["triton"] is not None:
        pytest.skip(f"triton: {mn.available_backends(DEVICE)['triton']}")
    once = _outputs(inner_steps)
    launched = set()
    for module_name, kernels in KernelsSkipped.KERNELS:
        module = importlib.import_module(module_name)
        for name in kernels:
            kernel = getattr(module, name)
            if hasattr(kernel, "in_place"):                   # an autotuned kernel
                monkeypatch.setattr(module, name, RunTwice(kernel, f"{module_name}.{name}", launched))
    twice = _outputs(inner_steps)
    # Step 1's lse, forward and backward kernels and its per-entry pair; the later steps' five kernels too.
    assert len(launched) == (5 if inner_steps == 1 else 10), sorted(launched)
    for a, b in zip(once, twice, strict=True):
        assert torch.equal(a, b)
