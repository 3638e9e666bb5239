"""mn_kernels: the fused kernels of mn and the math around them, a layer of its own (imports torch and triton,
never mn). docs/design.md, "Architecture", says how the layers fit.

One package per op, each with its kernels, launch configurations and host launcher:
    inner_gradient/   step 1 of the inner loop: attention, per-entry loss, contraction, projection
    later_step/       steps 2..T: the same at per-example weights

Torch-only modules (no triton: mn imports them on machines without it), each written once and used by the
Triton launchers, the native backend's host code and, where it fits, mn itself:
    dtypes.py         the compute dtype and the dot precision
    dropout.py        the entry-dropout hash, its constants and threshold, and its torch form
    rownorm.py        row normalisation and its backward
    entry_loss.py     the per-entry softmax / cross-entropy / delta and its backward
    projection.py     the cosine classifier's projection P_c and its backward's host part
Triton-only:
    tiles.py          tile-level @triton.jit pieces the kernels share
    rows.py           row normalisation and its backward as kernels (the launchers' prologue and epilogue)
    launching.py      the autotuner, the feature limit, the operand dtype, the SM count the grids fill
"""
