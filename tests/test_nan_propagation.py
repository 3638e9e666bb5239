"""NaN and Inf propagate through inner_gradient on every backend, as IEEE arithmetic does (issue #11, item 3).

With the value checks off (mn.set_value_checks(False); compiled code always skips them), a NaN or Inf in an
operand must come out as NaN in every output it touches, forward (grad, inner_loss) and backward (the
gradients w.r.t. z, keys, values, weight, tau) -- never as a finite number: a NaN that turns into a plausible
zero loss trains on silently. Which entries are non-finite is taken from backend="autograd" (the paper-literal
reference: plain autograd through IEEE operations) and every backend must reproduce that pattern exactly (but
for one documented convention under entry dropout, _expected_patterns); the rows a poisoned operand does not
touch must equal the clean run's. The native kernels' own NaN paths (the
running maximum of the log-sum-exp, the vectorised exp) are checked at the kernel level too, and the CUDA
kernels through the CPU emulation of tests/cuda_emulation.
"""
import shutil

import pytest
import torch
from test_native_cuda_emulated import _operands, emulated  # noqa: F401 (emulated: the fixture, reused)
from test_native_cuda_emulated import _run as run_kernels

import mn
from mn import native_ops
from mn_kernels.dropout import keep_mask, seed_mix

from helpers import NAMES, cotangents, make_inputs, outputs_and_grads, reorder_tol, shape_id

# NaN arithmetic is the point here: numpy (Triton's interpreter) warns about it.
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
BACKENDS = ["autograd", "torch", "native", "triton"]
REFERENCE = "autograd"
# What each bad value is written into: one row of z or keys, or one of values or weight, or tau itself.
OPERANDS = {"z": 0, "keys": 1, "values": 2, "weight": 3, "tau": 4}
# Tiny shape (every backend, Triton's interpreter included) and one past the native CPU kernels' blocks
# (query blocks of up to 16, entry tiles of 64): the bad query sits in the second query block, the bad key in
# the second entry tile (NaN reaching a running maximum that is already finite) or the first (a running
# maximum that starts NaN and must stay NaN over the later tiles).
TINY, LARGE = (3, 5, 2, 3), (19, 131, 7, 21)
BAD_ROW = {TINY: 1, LARGE: 17}
BAD_KEYS = {TINY: [1], LARGE: [3, 100]}
KW = dict(gamma=3.0, seed=123)


def _unavailable(backend):
    return mn.available_backends("cpu")[backend]


def _skip_unavailable(backend, shape):
    why = _unavailable(backend)
    if why is not None:
        pytest.skip(f"{backend} unavailable on cpu: {why}")
    if backend == "triton" and shape != TINY:
        pytest.skip("Triton runs in its interpreter on CPU: tiny shapes only")


@pytest.fixture(autouse=True)
def no_value_checks():
    """The value checks would reject the bad operands before any kernel runs: off here, restored after."""
    previous = mn.set_value_checks(False)
    try:
        yield
    finally:
        mn.set_value_checks(previous)


def _inputs(shape, dtype, operand=None, row=None, bad=float("nan")):
    """make_inputs with `bad` written into `operand` (row `row` of z / keys / values / weight, or tau)."""
    inputs = make_inputs(*shape, dtype=dtype, seed=2)
    if operand is not None:
        t = inputs[OPERANDS[operand]]
        if operand == "tau":
            t.fill_(bad)
        else:
            t[row, 0] = bad
    return [t.requires_grad_() for t in inputs]


def _run(backend, shape, dtype, dropout, **bad):
    cot = cotangents(shape[0], shape[2], shape[3], dtype=dtype)
    return outputs_and_grads(_inputs(shape, dtype, **bad), backend, cot, entry_dropout=dropout, **KW)


def _expected_patterns(ref, shape, dropout, bad_queries=(), bad_key=None):
    """Where each output must be non-finite: the reference's pattern, except dvalues under dropout, where it is
    a range (lo, hi) between two IEEE-consistent conventions.

    A dropped entry has weight exactly 0 in native (CPU and CUDA) and Triton, also for a query whose lse is
    NaN, so such a query poisons only the entries it keeps: dvalues_j is NaN iff some such query keeps j (or
    j is the bad key itself) -- lo. backend="autograd" forms softmax(scores) * keep, and `torch` sums
    e_ij delta_j over all entries, where a dropped entry of a NaN row is NaN * 0 = NaN and every dvalues row
    turns NaN -- hi, the reference's pattern, which must contain lo. The other outputs agree between the two.
    bad_queries: the queries with a NaN score (given, or for a bad key: those that keep it)."""
    patterns = [~torch.isfinite(t) for t in ref]
    if dropout == 0.0:
        return patterns
    B, S = shape[0], shape[1]
    keep = keep_mask(seed_mix(KW["seed"]), torch.arange(B), torch.arange(S), dropout)
    if bad_key is not None:
        bad_queries = keep[:, bad_key].nonzero().flatten().tolist()
    touched = keep[list(bad_queries)].any(0)
    if bad_key is not None:
        touched[bad_key] = True
    dvalues = NAMES.index("dvalues")
    lo = touched[:, None].expand(S, shape[2])
    assert (patterns[dvalues] | ~lo).all(), "the reference's dvalues pattern should contain the fused one"
    patterns[dvalues] = (lo, patterns[dvalues])
    return patterns


def _rows(mask):
    """The rows (first index) of a boolean mask with a True entry, shortened for a message."""
    rows = sorted({int(i) for i in mask.reshape(mask.shape[0], -1).any(1).nonzero().flatten()}) if mask.dim() else []
    return rows if len(rows) <= 12 else rows[:12] + ["..."]


def _assert_pattern_matches(got, expected, backend):
    """Each output's non-finite entries equal the expected mask, or lie within an expected (lo, hi) range."""
    for name, a, want in zip(NAMES, got, expected):
        bad = ~torch.isfinite(a)
        lo, hi = want if isinstance(want, tuple) else (want, want)
        assert a.shape == lo.shape, name
        assert (bad | ~lo).all() and (hi | ~bad).all(), (
            f"{backend} {name}: {int(bad.sum())} non-finite entries (rows {_rows(bad)}), expected "
            f"{int(lo.sum())}..{int(hi.sum())} (rows {_rows(lo)}..{_rows(hi)})")


# ------------------------------------------------------------------------------------- the public op

@pytest.mark.parametrize("dropout", [0.0, 0.5], ids=["nodrop", "drop0.5"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("shape", [TINY, LARGE], ids=shape_id)
@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_query_row_gives_nan_in_that_row_only(backend, shape, dtype, bad, dropout):
    """NaN or +Inf in one row of z: that query's grad, inner_loss and dz are NaN (+Inf normalises to NaN);
    every other query's are finite and equal the clean run's; the gradients w.r.t. the dictionary, weight
    and tau (sums over the queries) are non-finite exactly where the reference's are."""
    _skip_unavailable(backend, shape)
    r = BAD_ROW[shape]
    got = _run(backend, shape, dtype, dropout, operand="z", row=r, bad=bad)
    clean = _run(backend, shape, dtype, dropout)
    ref = _run(REFERENCE, shape, dtype, dropout, operand="z", row=r, bad=bad)
    others = [i for i in range(shape[0]) if i != r]
    for name, a, c in zip(NAMES[:3], got[:3], clean[:3]):   # grad, inner_loss, dz: one row per query
        assert torch.isnan(a[r]).all(), f"{backend} {name}[{r}] = {a[r]} (expected NaN)"
        assert torch.isfinite(a[others]).all(), name
        torch.testing.assert_close(a[others], c[others], **reorder_tol(dtype),
                                   msg=lambda m: f"{backend} {name}: {m}")
    if backend != REFERENCE:
        _assert_pattern_matches(got, _expected_patterns(ref, shape, dropout, bad_queries=[r]), backend)


@pytest.mark.parametrize("dropout", [0.0, 0.5], ids=["nodrop", "drop0.5"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("shape", [TINY, LARGE], ids=shape_id)
@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_key_reaches_every_query_that_keeps_it(backend, shape, dtype, bad, dropout):
    """NaN or +Inf in one key: every query's grad, inner_loss and dz are NaN (every query attends to it;
    under dropout a query that drops it still meets its NaN cross-entropy and delta as 0 * NaN), and the
    non-finite pattern of every output is the reference's (_expected_patterns)."""
    _skip_unavailable(backend, shape)
    for j in BAD_KEYS[shape]:
        got = _run(backend, shape, dtype, dropout, operand="keys", row=j, bad=bad)
        ref = _run(REFERENCE, shape, dtype, dropout, operand="keys", row=j, bad=bad)
        for name, a in zip(NAMES[:3], got[:3]):
            assert torch.isnan(a).all(), f"{backend} key {j}: {name} has non-NaN entries"
        if backend != REFERENCE:
            _assert_pattern_matches(got, _expected_patterns(ref, shape, dropout, bad_key=j), backend)


@pytest.mark.parametrize("operand", ["values", "weight", "tau"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_in_values_weight_or_tau_matches_the_reference(backend, dtype, operand):
    """NaN in one row of values or weight, or in tau: the same non-finite pattern as the reference."""
    _skip_unavailable(backend, TINY)
    got = _run(backend, TINY, dtype, 0.0, operand=operand, row=1)
    ref = _run(REFERENCE, TINY, dtype, 0.0, operand=operand, row=1)
    assert not torch.isfinite(got[0]).all() and not torch.isfinite(got[1]).all()
    _assert_pattern_matches(got, _expected_patterns(ref, TINY, 0.0), backend)


def test_compiled_native_propagates_nan_with_value_checks_on():
    """Compiled code skips the value checks whatever the setting: the kernels themselves must propagate."""
    _skip_unavailable("native", TINY)
    mn.set_value_checks(True)                       # restored by the autouse fixture
    inputs = _inputs(TINY, torch.float64, operand="z", row=1)
    fn = torch.compile(lambda *a: mn.inner_gradient(*a, gamma=3.0, backend="native"), fullgraph=True,
                       backend="aot_eager")
    grad, loss = fn(*inputs)
    (dz,) = torch.autograd.grad(loss.sum() + grad.sum(), inputs[0])
    for name, t in (("grad", grad), ("inner_loss", loss), ("dz", dz)):
        assert torch.isnan(t[1]).all() and torch.isfinite(t[[0, 2]]).all(), f"{name}: {t}"


# --------------------------------------------------------------------- the native kernels themselves

needs_native = pytest.mark.skipif(native_ops.unavailable(torch.device("cpu")) is not None,
                                  reason="native backend unavailable")
needs_emulation = pytest.mark.skipif(native_ops.unavailable(torch.device("cpu")) is not None
                                     or shutil.which("g++") is None, reason="needs mn._C and g++")


def _kernel_operands(shape, dtype, where, entry=1):
    """The contraction kernels' operands (test_native_cuda_emulated._operands) as the op prepares them from a
    NaN in query 1 (`where` = "zs": the normalised row zs_1 is all NaN) or in key `entry` ("kh": kh_j, so the
    column of khT, entry j's delta and its cross-entropy are all NaN)."""
    ops = _operands(*shape, dtype)
    nan = float("nan")
    if where == "zs":
        ops["zs"][1] = nan
    else:
        j = entry
        ops["kh"][j], ops["khT"][:, j], ops["deltaT"][:, j], ops["ce"][j] = nan, nan, nan, nan
    return ops


@needs_native
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("shape", [(3, 7, 2, 3), (19, 300, 5, 11)], ids=shape_id)
def test_native_cpu_kernel_lse_is_nan_for_a_nan_query(shape, dtype):
    """The log-sum-exp of a query with a NaN score is NaN (not -inf, which marks "every entry dropped" and
    zeroes the query's weights), and that query's U, loss and dzh are NaN; the others' lse are finite."""
    got = run_kernels("cpu", _kernel_operands(shape, dtype, "zs"), *shape, 0.0, seed=0)
    others = [i for i in range(shape[0]) if i != 1]
    assert torch.isnan(got["lse"][1]) and torch.isfinite(got["lse"][others]).all()
    for name in ("U", "loss", "dzh"):
        assert torch.isnan(got[name][1]).all(), name
    for name in ("dkh", "ddelta", "dce"):   # sums over the queries, query 1 included
        assert torch.isnan(got[name]).all(), name


@needs_native
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_native_cpu_kernel_lse_is_nan_for_a_nan_key_in_any_tile(dtype):
    """A NaN key in the first entry tile of 64 (the running maximum starts NaN and must stay NaN over the
    finite tiles after it) or in the last (it turns NaN after finite tiles): every query's lse is NaN."""
    shape = (4, 250, 3, 5)
    for j in (1, 200):
        ops = _kernel_operands(shape, dtype, "kh", entry=j)
        got = run_kernels("cpu", ops, *shape, 0.0, seed=0)
        assert torch.isnan(got["lse"]).all(), (j, got["lse"])


@needs_emulation
@pytest.mark.parametrize("dropout", [0.0, 0.5], ids=["nodrop", "drop0.5"])
@pytest.mark.parametrize("where", ["zs", "kh"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("shape", [(3, 7, 2, 3), (19, 300, 5, 11)], ids=shape_id)
def test_emulated_cuda_kernels_propagate_nan_like_the_cpu_kernels(emulated, shape, dtype, where, dropout):  # noqa: F811
    """The CUDA kernels (lse_kernel's per-thread running maximum and its tree reduction, then the weights)
    give NaN exactly where the CPU kernels do, lse included, and equal them elsewhere."""
    ops = _kernel_operands(shape, dtype, where)
    want = run_kernels("cpu", ops, *shape, dropout, seed=11)
    got = run_kernels(emulated, ops, *shape, dropout, seed=11)
    assert torch.isnan(want["lse"]).any()
    tol = 1e-12 if dtype == torch.float64 else 1e-4
    for name in want:
        assert torch.equal(torch.isnan(got[name]), torch.isnan(want[name])), name
        assert torch.equal(torch.isinf(got[name]), torch.isinf(want[name])), name
        ok = torch.isfinite(want[name])
        torch.testing.assert_close(got[name][ok], want[name][ok], rtol=tol, atol=tol, msg=name)
