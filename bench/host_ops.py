"""Host-side torch ops of one head training step, forward and backward separately: every op the step
dispatches besides the Triton kernels (those launch without the dispatcher), views excluded. On a GPU each is at
least one launch, a few microseconds of host time, so this counts what folding into kernels can remove.
Counted on the CPU; for `triton` with its kernels skipped (mn.memory_accounting.KernelsSkipped), since the
interpreter that would run them adds tensor copies of its own. The head's own ops (adapted logits, the loss) count.

    python bench/host_ops.py [--config 16,64,10,32] [--backends triton native torch] [--detail]
"""
import argparse
import collections
import contextlib
import os

os.environ.setdefault("TRITON_INTERPRET", "1")
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch._library import custom_ops  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

import mn  # noqa: E402
from mn.memory_accounting import KernelsSkipped  # noqa: E402


class OpCounter(TorchDispatchMode):
    """Counts the non-view ops dispatched inside it (mn's custom ops count as the ops their bodies run)."""

    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        # mn's custom ops: run their Python bodies (launchers and torch glue) under this mode, so their ops count.
        op = custom_ops.OPDEFS.get(func._schema.name) if func._schema.name.startswith("mn::") else None
        if op is not None:
            with self:
                return op._init_fn(*args, **(kwargs or {}))
        out = func(*args, **(kwargs or {}))
        if not func.is_view and func._schema.name.startswith("aten::") and func._schema.name not in (
                "aten::detach", "aten::lift_fresh", "aten::empty.memory_format"):
            self.ops[func._schema.name] += 1
        return out


def count(backend: str, B: int, S: int, C: int, n: int, inner_steps: int = 1):
    torch.manual_seed(0)
    head = mn.MetaNeighborhoodsHead(n, C, num_entries=S, backend=backend, entry_dropout=0.5, inner_steps=inner_steps)
    z, y = torch.randn(B, n, requires_grad=True), torch.randint(0, C, (B,))
    loss = F.cross_entropy(head(z), y)
    loss.backward()                                      # warm-up: autotuning, first-call paths
    # Triton's kernels skipped: the interpreter would add the tensor copies it makes to run them on the CPU.
    with KernelsSkipped() if backend == "triton" else contextlib.nullcontext():
        with OpCounter() as fwd:
            loss = F.cross_entropy(head(z), y)
        with OpCounter() as bwd:
            loss.backward()
    return fwd.ops, bwd.ops


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="16,64,10,32", help="B,S,C,n")
    parser.add_argument("--backends", nargs="+", default=["triton", "native", "torch"])
    parser.add_argument("--inner-steps", type=int, nargs="+", default=[1])
    parser.add_argument("--detail", action="store_true", help="list the ops")
    args = parser.parse_args(argv)
    mn.set_value_checks(False)
    B, S, C, n = (int(v) for v in args.config.split(","))
    print("| backend | inner steps | forward ops | backward ops |\n| --- | --- | --- | --- |")
    for backend in args.backends:
        for steps in args.inner_steps:
            fwd, bwd = count(backend, B, S, C, n, steps)
            print(f"| {backend} | {steps} | {sum(fwd.values())} | {sum(bwd.values())} |")
            if args.detail:
                print("  forward:", dict(fwd.most_common()), "\n  backward:", dict(bwd.most_common()))


if __name__ == "__main__":
    main()
