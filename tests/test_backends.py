"""Backend dispatch: auto picks an available backend and says which; every named backend runs or explains why not."""
import pytest
import torch

import mn
from mn.backends import AUTO_ORDER, BACKENDS

from helpers import make_inputs


def test_auto_resolves_to_first_available_in_order():
    status = mn.available_backends("cpu")
    chosen = mn.resolve_backend("auto", "cpu")
    assert status[chosen] is None
    assert chosen == next(b for b in AUTO_ORDER["cpu"] if status[b] is None)


def test_every_available_backend_agrees_with_autograd():
    inputs = make_inputs(3, 10, 4, 5, seed=1)
    expected = mn.inner_gradient(*inputs, gamma=4.0, backend="autograd")
    for name, why in mn.available_backends("cpu").items():
        if why is None:
            got = mn.inner_gradient(*inputs, gamma=4.0, backend=name)
            for a, b in zip(got, expected):
                torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=lambda m: f"{name}: {m}")


def test_unavailable_backend_says_why():
    from mn.backends import Backend, register_backend
    register_backend(Backend("never", BACKENDS["torch"].inner_gradient, lambda d: "it is a test double",
                             later_step=None))
    try:
        with pytest.raises(ValueError, match=r"backend='never' cannot run on cpu \(it is a test double\)"):
            mn.inner_gradient(*make_inputs(2, 3, 2, 2), gamma=1.0, backend="never")
        assert mn.available_backends()["never"] == "it is a test double"
    finally:
        del BACKENDS["never"]


def test_auto_skips_a_backend_that_rejects_the_feature_count(monkeypatch):
    """A preferred backend that cannot take n features (the Triton kernels: n <= 1024) is skipped by `auto`
    and, named explicitly, raises saying why; smaller n still runs on it."""
    from mn.backends import Backend, register_backend
    calls = []

    def picky(*args, **kwargs):
        calls.append(args[0].shape[1])
        return BACKENDS["torch"].inner_gradient(*args, **kwargs)
    monkeypatch.setitem(AUTO_ORDER, "cpu", AUTO_ORDER["cpu"])      # restored after the test
    monkeypatch.setitem(BACKENDS, "picky", None)
    register_backend(Backend("picky", picky, lambda d: None, later_step=picky,
                             rejects=lambda n, dtype: "test double takes n <= 4" if n > 4 else None),
                     prefer_on=("cpu",))
    narrow, wide = make_inputs(2, 3, 2, 4), make_inputs(2, 3, 2, 5)
    expected = mn.inner_gradient(*wide, gamma=1.0, backend="torch")
    for a, b in zip(mn.inner_gradient(*wide, gamma=1.0), expected):
        torch.testing.assert_close(a, b)
    mn.inner_gradient(*narrow, gamma=1.0)
    assert calls == [4]
    with pytest.raises(ValueError, match=r"backend='picky' cannot take z with n = 5 features \(test double "
                                         r"takes n <= 4\); backend='torch' takes any n"):
        mn.inner_gradient(*wide, gamma=1.0, backend="picky")
