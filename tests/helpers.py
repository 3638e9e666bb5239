"""Helpers shared by the tests: random operands, cotangents, the outputs and gradients of an op, and the
tolerance tables.

Comparisons between two *different* code paths (a chunked and an unchunked sum, a checkpointed recomputation
and a plain forward, a fused kernel and its reference) use a tolerance derived from the dtype: the paths round
differently, and how they round depends on the CPU (AVX-512 or AVX2 reduction widths). Bitwise equality is kept
for determinism claims about one path only (reruns, thread counts, dropout replay).
"""
import contextlib

import torch


def reorder_tol(dtype: torch.dtype, ulps: int = 64) -> dict:
    """rtol/atol for two paths that evaluate the same expression in a different order: `ulps` units of
    rounding of `dtype` (a few per operation, grown by the reductions' length), relative and absolute for
    entries of magnitude ~1."""
    eps = torch.finfo(dtype).eps
    return dict(rtol=ulps * eps, atol=ulps * eps)


@contextlib.contextmanager
def matmul_precision(precision: str):
    """torch.set_float32_matmul_precision(precision) inside, the previous setting restored after."""
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(old)


def make_inputs(B, S, C, n, *, dtype=torch.float64, seed=0, requires_grad=False, device="cpu"):
    """Random operands of inner_gradient: z (B,n), keys (S,n), values (S,C) probabilities, weight (C,n), tau."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, n, generator=g, dtype=torch.float64)
    keys = torch.randn(S, n, generator=g, dtype=torch.float64)
    values = torch.softmax(2 * torch.randn(S, C, generator=g, dtype=torch.float64), dim=1)
    weight = torch.randn(C, n, generator=g, dtype=torch.float64)
    tau = torch.tensor(3.0, dtype=torch.float64)
    out = [t.to(device=device, dtype=dtype) for t in (z, keys, values, weight, tau)]
    return [t.requires_grad_(requires_grad) for t in out]


def make_alpha(kind, C, n):
    """An inner rate of `kind` ("scalar", "feature" (n,) or "elementwise" (C, n)) in [0.05, 0.15), float64."""
    g = torch.Generator().manual_seed(3)
    shape = {"scalar": (), "feature": (n,), "elementwise": (C, n)}[kind]
    return (0.05 + 0.1 * torch.rand(shape, generator=g, dtype=torch.float64)).requires_grad_()


def shape_id(shape):
    return "B{}-S{}-C{}-n{}".format(*shape)


NAMES = ["grad", "inner_loss", "dz", "dkeys", "dvalues", "dweight", "dtau"]   # what outputs_and_grads returns


def cotangents(B, C, n, dtype=torch.float64, device="cpu"):
    """Fixed random cotangents (dgrad (B,C,n), dloss (B,)) for comparing backwards."""
    g = torch.Generator().manual_seed(1)
    return (torch.randn(B, C, n, generator=g, dtype=dtype).to(device),
            torch.randn(B, generator=g, dtype=dtype).to(device))


def outputs_and_grads(inputs, backend, cot, **kw):
    """[grad, inner_loss, dz, dkeys, dvalues, dweight, dtau] of mn.inner_gradient on `backend` (see NAMES)."""
    import mn
    grad, loss = mn.inner_gradient(*inputs, backend=backend, **kw)
    dins = torch.autograd.grad((grad * cot[0]).sum() + (loss * cot[1]).sum(), inputs)
    return [grad, loss, *dins]


def assert_same_state(a, b, path="state"):
    """Two checkpoint states equal to the bit, recursively: tensors, dicts (same keys), lists, plain values.
    For one training path run twice (straight and resumed), never for two different code paths."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_same_state(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (u, v) in enumerate(zip(a, b)):
            assert_same_state(u, v, f"{path}[{i}]")
    else:
        assert a == b, path


def scaled_error(a, b):
    """max |a - b| relative to max |b|: one number per output, robust to entries near zero."""
    return ((a.double() - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()



# ---------------------------------------------------------------- tolerance tables
# Two exact formulations in float64 (a fused backend or the closed form against the literal reference):
# rounding only, grown by the conditioning of softmax-weighted sums.
EXACT_FLOAT64 = dict(rtol=1e-10, atol=1e-10)

# Scaled error (`scaled_error`: max |got - exact| / max |exact|) of the fused backends against float64 on the
# same rounded inputs, per input dtype and gamma, fp32 dots in IEEE ("highest"), on keys clustered around the
# queries (tests/test_precision.py: at gamma = 1000 a query still spreads its attention, as over a trained
# dictionary; on random keys it is one-hot and every closed-form backend's dz is rounding of an exact zero).
# float32 accumulates in float32. bf16 / fp16 compute in float32 from rounded inputs; Triton also rounds its dot
# operands to the input dtype, so its scores are off by ~gamma * 2^-11 (fp16; measured) or ~gamma * 2^-8 (bf16:
# predicted as 8x fp16's, since the CPU interpreter runs bf16 dots on float32 operands; the GPU run checks it).
# Measured maxima over 3 seeds at (3, 40, 5, 16) in the interpreter and the native CPU kernels, ~5x headroom.
# LOW_PRECISION is for dots on operands rounded to the input dtype (Triton; the fp32 row: every backend); None: no
# bound a test could fail that is worth stating (bf16 dots at gamma = 1000 move a logit by ~4: only the comparison
# with autograd computing in bf16 is checked). FLOAT32_DOTS is for float32 dots on the rounded inputs (native
# everywhere, Triton's bf16 in the interpreter): the output's own rounding, at every gamma (measured: bf16
# 3.7-4.9e-3, fp16 4.3-5.7e-4).
LOW_PRECISION = {
    torch.float32: {5.0: 2e-5, 100.0: 1e-4, 1000.0: 1e-3},
    torch.bfloat16: {5.0: 6e-2, 100.0: 2e-1, 1000.0: None},
    torch.float16: {5.0: 2e-2, 100.0: 1e-1, 1000.0: 1.0},
}
FLOAT32_DOTS = {torch.bfloat16: 2.5e-2, torch.float16: 3e-3}


def low_precision_tol(backend: str, dtype: torch.dtype, gamma: float, device: str) -> float | None:
    """The scaled-error bound of `backend` on `device` for inputs of `dtype` at `gamma` (tables above)."""
    float32_dots = backend == "native" or (backend == "triton" and device == "cpu" and dtype == torch.bfloat16)
    if float32_dots and dtype in FLOAT32_DOTS:
        return FLOAT32_DOTS[dtype]
    return LOW_PRECISION[dtype][gamma]
# float32 with TF32 dots (GPU, matmul precision "high"): 10 mantissa bits per operand, at gamma = 5.
TF32 = 5e-3


def mnist5k_protocol_quote() -> dict:
    """The committed mnist5k summary of bench/paper_claims.py formatted as `mn demo` and the README quote it:
    'acc' row -> '97.52 ± 0.26%'; 'diff' key -> ('+0.76', '+0.09', '+1.43') for MN ft:1+S against that baseline."""
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "results" / "paper-claims-table1-summary.json"
    s = json.loads(path.read_text())["mnist5k"]
    rows, diffs = s["rows"], s["differences"]["MN ft:1+S"]
    acc = {name: f"{100 * row['mean']:.2f} ± {100 * row['std']:.2f}%" for name, row in rows.items()}
    diff = {key: tuple(f"{100 * x:+.2f}" for x in (d["mean"], *d["ci95"])) for key, d in diffs.items()}
    return {"seeds": s["seeds"], "best_vanilla": s["best_vanilla"], "best_wide": s["best_wide"], "acc": acc,
            "diff": diff}
