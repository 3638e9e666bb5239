"""The whole head training step replayed as a CUDA graph against the same step run eagerly: how much of the
step is host work (Python, dispatch, ~200 launches) rather than device work (README, "No host
synchronisation; CUDA graphs").

A MetaNeighborhoodsHead on `triton` (value checks off, no entry dropout), one step = head(z), outer
cross-entropy, backward into z and every parameter. Three ways, each timed with triton.testing.do_bench
(median ms):
- eager: the step as a training loop runs it;
- make_graphed_callables: the README's recipe, torch.cuda.make_graphed_callables(head, (z,)), replaying the
  head's forward and backward (the cross-entropy and the gradient accumulation stay eager);
- whole-step graph: forward, loss and backward captured together with torch.cuda.graph (gradients set to
  None before the capture, so the graph owns them), replayed with one call.
fp32 inputs (TF32 dots) and bf16 (head and z in bf16).

    python bench/graph_step.py [--config 128,10000,100,256] [--dtypes float32 bfloat16] [--out FILE.md]

Without a GPU only the eager step runs (through Triton's interpreter, a dry run of this script); the graph
rows say "skipped: no GPU".
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")
import kernel_launches as kl
import report
import torch.nn.functional as F

import mn


def make_step(cfg, dtype):
    """(head, z, y): a head on `triton` at cfg = (B, S, C, n) in `dtype`, queries z (B, n) that need grad."""
    B, S, C, n = cfg
    torch.manual_seed(0)
    head = mn.MetaNeighborhoodsHead(n, C, num_entries=S, gamma=5.0, backend="triton").to(DEVICE, dtype)
    z = torch.randn(B, n, device=DEVICE, dtype=dtype, requires_grad=True)
    y = torch.randint(0, C, (B,), device=DEVICE)
    return head, z, y


def eager_ms(head, z, y) -> float:
    def step():
        F.cross_entropy(head(z).float(), y).backward()
    return kl.time_ms(step)


def graphed_callables_ms(head, z, y) -> float:
    graphed = torch.cuda.make_graphed_callables(head, (z,))      # warm-up (autotuning) and capture

    def step():
        F.cross_entropy(graphed(z).float(), y).backward()
    return kl.time_ms(step)


def whole_graph_ms(head, z, y) -> float:
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):                                # warm-up off the capture stream
        for _ in range(3):
            head.zero_grad(set_to_none=True)
            z.grad = None
            F.cross_entropy(head(z).float(), y).backward()
    torch.cuda.current_stream().wait_stream(side)
    head.zero_grad(set_to_none=True)
    z.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        F.cross_entropy(head(z).float(), y).backward()
    return kl.time_ms(graph.replay)


def row(cfg, dtype: str) -> str:
    """The table's row of `dtype`: eager, make_graphed_callables and whole-step graph ms, the host share."""
    try:
        head, z, y = make_step(cfg, kl.DTYPES[dtype])
        eager = eager_ms(head, z, y)
    except Exception as exc:                                     # noqa: BLE001 (a failed row is a result)
        return f"| {kl.LABEL[dtype]} | failed: {report.short_error(exc)} | | | |"
    cells, graph = [f"{eager:.3f}"], None
    for how in (graphed_callables_ms, whole_graph_ms):
        if DEVICE != "cuda":
            cells.append("skipped: no GPU")
            continue
        try:
            head, z, y = make_step(cfg, kl.DTYPES[dtype])        # a fresh head: no captured state shared
            ms = how(head, z, y)
            cells.append(f"{ms:.3f}")
            graph = ms if graph is None else min(graph, ms)
        except Exception as exc:                                 # noqa: BLE001
            cells.append(f"failed: {report.short_error(exc, 120)}")
    share = f"{100 * (1 - graph / eager):.0f}%" if graph is not None else "-"
    return f"| {kl.LABEL[dtype]} | " + " | ".join(cells) + f" | {share} |"


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    kl.add_common_args(parser)
    args = parser.parse_args(argv)
    cfg = kl.parse_config(args.config)
    torch.set_float32_matmul_precision("high")
    mn.set_value_checks(False)                  # the checks read values back by design: no graph with them
    start = time.monotonic()
    emit = report.open_report(f"# Head step: CUDA graph replay vs eager at B,S,C,n = {args.config}", __file__, argv,
                              args.out)
    try:
        emit("- MetaNeighborhoodsHead on triton, value checks off, no entry dropout; step = head(z) + CE + backward "
             "into z and every parameter; median ms of triton.testing.do_bench; host share = 1 - graph / eager")
        emit("")
        emit("| dtype | eager ms | make_graphed_callables ms | whole-step graph ms | host share of eager |")
        emit("| --- | --- | --- | --- | --- |")
        for dtype in args.dtypes:
            emit(row(cfg, dtype))
        emit("")
        if DEVICE != "cuda":
            emit("- graph replay: skipped: no GPU (the eager step ran on the CPU through the Triton interpreter)")
        emit(f"- took {time.monotonic() - start:.0f} s")
    finally:
        emit.close()


if __name__ == "__main__":
    main()
