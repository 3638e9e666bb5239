"""Bad input (docs/design.md, "Bad input"): each gets a clear error that names the argument."""
import pytest
import torch

import mn

from helpers import make_inputs

NAMES = ["z", "keys", "values", "weight", "tau"]


def _call(**override):
    args = dict(zip(NAMES, make_inputs(3, 8, 4, 5, dtype=torch.float32)))
    args.update({k: v for k, v in override.items() if k in NAMES})
    kw = dict(gamma=5.0)
    kw.update({k: v for k, v in override.items() if k not in NAMES})
    return mn.inner_gradient(*(args[k] for k in NAMES), **kw)


def _bad(name, value, match, **extra):
    return pytest.param({name: value, **extra}, match, id=f"{name}-{match.split()[0]}")


CASES = [
    _bad("z", torch.randn(3, 6), r"keys must have shape \(S, n=6\)"),
    _bad("z", torch.randn(3, 5, 1), r"z must have shape \(B, n\)"),
    _bad("z", torch.randn(0, 5), r"z must have B >= 1"),
    _bad("keys", torch.randn(0, 5), r"keys is empty \(S = 0\)", values=torch.ones(0, 4) / 4),
    _bad("weight", torch.randn(1, 5), r"weight must have C >= 2 rows"),
    _bad("values", torch.full((8, 1), 1.0), r"values must have shape \(S=8, C=4\)"),
    _bad("values", torch.randn(7, 4).softmax(1), r"values must have shape \(S=8, C=4\)"),
    _bad("values", torch.randn(8, 3).softmax(1), r"values must have shape \(S=8, C=4\): one row per key, one "
                                                 r"column per row of weight; got \(8, 3\)"),
    _bad("values", torch.randn(8, 4), r"values must hold probabilities"),
    _bad("weight", torch.randn(4, 6), r"weight must have shape \(C, n=5\), got \(4, 6\)"),
    _bad("tau", torch.ones(2), r"tau must be a scalar"),
    _bad("z", torch.randn(3, 5, dtype=torch.float64), r"keys has dtype torch.float32 but z has torch.float64"),
    _bad("z", torch.randint(0, 3, (3, 5)), r"z must be a floating tensor"),
    _bad("keys", [[1.0] * 5] * 8, r"keys must be a torch.Tensor"),
    _bad("keys", torch.randn(8, 5, device="meta"), r"keys is on meta but z is on cpu"),
    _bad("z", torch.tensor([[float("nan")] * 5] * 3), r"z contains NaN or Inf"),
    _bad("tau", torch.tensor(float("inf")), r"tau contains NaN or Inf"),
    _bad("keys", torch.cat([torch.randn(7, 5), torch.zeros(1, 5)]), r"keys has a zero-norm row \(first at row 7\)"),
    _bad("weight", torch.zeros(4, 5), r"weight has a zero-norm row"),
    _bad("gamma", 0.0, r"gamma must be a finite number > 0"),
    _bad("gamma", -1.0, r"gamma must be a finite number > 0"),
    _bad("gamma", torch.tensor(5.0), r"gamma must be a Python number"),
    _bad("entry_dropout", 1.0, r"entry_dropout must be a number in \[0, 1\)"),
    _bad("seed", -3, r"seed must be None, an integer in \[0, 2\*\*63\) or a one-integer tensor"),
    _bad("seed", torch.tensor([1, 2]), r"seed as a tensor must hold one integer", entry_dropout=0.5),
    _bad("seed", torch.tensor(1.5), r"seed as a tensor must hold one integer", entry_dropout=0.5),
    _bad("backend", "cuda", r"backend='cuda' is unknown. Available on cpu: auto, autograd, torch"),
]


@pytest.mark.parametrize("override,match", CASES)
def test_inner_gradient_rejects(override, match):
    with pytest.raises((ValueError, TypeError), match=match):
        _call(**override)


@pytest.mark.parametrize("alpha,steps,match", [
    (torch.ones(3), 1, r"alpha must be a scalar, shape \(n,\) = \(5,\) or \(C, n\) = \(4, 5\)"),
    (torch.ones(4, 5, dtype=torch.float64), 1, r"alpha must match z's dtype"),
    (torch.tensor(float("nan")), 1, r"alpha contains NaN"),
    (torch.tensor(0.1), 0, r"inner_steps must be a positive integer"),
    (torch.tensor(0.1), 1.5, r"inner_steps must be a positive integer"),
])
def test_adapted_logits_rejects(alpha, steps, match):
    inputs = make_inputs(3, 8, 4, 5, dtype=torch.float32)
    with pytest.raises((ValueError, TypeError), match=match):
        mn.adapted_logits(*inputs, alpha, gamma=5.0, inner_steps=steps)


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_classes=1), r"num_classes must be an integer >= 2"),
    (dict(num_entries=0), r"num_entries must be a positive integer"),
    (dict(gamma=0), r"gamma must be a finite number > 0"),
    (dict(inner_lr="diag"), r"inner_lr must be one of 'scalar', 'feature', 'elementwise'"),
    (dict(entry_dropout=1.5), r"entry_dropout must be a number in \[0, 1\)"),
    (dict(backend="cuda"), r"backend='cuda' is unknown"),
])
def test_head_rejects(kwargs, match):
    args = dict(in_features=8, num_classes=3, num_entries=10) | kwargs
    with pytest.raises(ValueError, match=match):
        mn.MetaNeighborhoodsHead(**args)


def test_generic_rejects_wrong_input_width():
    m = mn.MetaNeighborhoods(torch.nn.Linear(3, 2), 3, 2, 5)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 3\)"):
        m(torch.randn(4, 2))


@pytest.fixture
def value_checks_off():
    previous = mn.set_value_checks(False)
    yield
    mn.set_value_checks(previous)


def test_value_checks_can_be_turned_off(value_checks_off):
    # Without value checks a NaN query or rate is not rejected (what it yields is then undefined) ...
    _call(z=torch.tensor([[float("nan")] * 5] * 3))
    inputs = make_inputs(3, 8, 4, 5, dtype=torch.float32)
    mn.adapted_logits(*inputs, torch.tensor(float("nan")), gamma=5.0)
    # ... while shapes, dtypes and devices are still checked.
    with pytest.raises(ValueError, match=r"weight must have shape \(C, n=5\)"):
        _call(weight=torch.randn(4, 6))
    with pytest.raises(ValueError, match=r"alpha must be a scalar"):
        mn.adapted_logits(*inputs, torch.ones(3), gamma=5.0)


def test_set_value_checks_returns_the_previous_setting_and_rejects_non_bools():
    previous = mn.set_value_checks(False)
    try:
        assert previous is True, "value checks are on by default"
        assert mn.set_value_checks(True) is False
        with pytest.raises(ValueError, match="z contains NaN or Inf"):
            _call(z=torch.tensor([[float("nan")] * 5] * 3))
    finally:
        mn.set_value_checks(previous)
    with pytest.raises(TypeError, match="enabled must be a bool"):
        mn.set_value_checks(0)


def test_adapted_logits_checks_operands_and_alpha_in_one_synchronisation(monkeypatch):
    """One read-back per call: the flags of z, keys, values, weight, tau and alpha are stacked together."""
    import mn._validate as validate
    reads = []
    original = validate._check_values
    monkeypatch.setattr(validate, "_check_values", lambda named: (reads.append(sorted(named)), original(named)))
    mn.adapted_logits(*make_inputs(3, 8, 4, 5, dtype=torch.float32), torch.tensor(0.1), gamma=5.0)
    assert reads == [sorted(NAMES + ["alpha"])]


def test_gamma_beyond_the_inputs_dtype_range_is_refused():
    """float16 holds at most 65504: gamma * cos would overflow to inf on the backends computing in float16."""
    inputs = make_inputs(3, 8, 4, 5, dtype=torch.float16)
    with pytest.raises(ValueError, match=r"gamma = 100000.0 overflows the inputs' dtype torch.float16"):
        mn.inner_gradient(*inputs, gamma=1e5)
    grad, _ = mn.inner_gradient(*inputs, gamma=6e4, backend="torch")
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("backend", ["auto", "torch", "autograd"])
def test_meta_tensors_get_shapes_checked_and_values_skipped(backend):
    """On the meta device (shape inference, deferred init) there are no values to check; shapes still are."""
    z, keys, values, weight, tau = [t.to("meta") for t in make_inputs(3, 8, 4, 5)]
    alpha = torch.tensor(0.1, dtype=torch.float64, device="meta")
    grad, loss = mn.inner_gradient(z, keys, values, weight, tau, gamma=5.0, backend=backend)
    logits = mn.adapted_logits(z, keys, values, weight, tau, alpha, gamma=5.0, inner_steps=2, backend=backend)
    assert grad.shape == (3, 4, 5) and loss.shape == (3,) and logits.shape == (3, 4)
    assert grad.device.type == logits.device.type == "meta"
    with pytest.raises(ValueError, match=r"values must have shape \(S=8, C=4\)"):
        mn.inner_gradient(z, keys, values[:, :3], weight, tau, gamma=5.0, backend=backend)
