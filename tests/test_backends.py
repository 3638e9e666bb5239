"""Backend dispatch: auto picks an available backend and says which; every named backend runs or explains why not."""
import pytest
import torch

import mn
from mn.backends import AUTO_ORDER, BACKENDS

from conftest import make_inputs


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
                             per_example=False))
    try:
        with pytest.raises(ValueError, match=r"backend='never' cannot run on cpu \(it is a test double\)"):
            mn.inner_gradient(*make_inputs(2, 3, 2, 2), gamma=1.0, backend="never")
        assert mn.available_backends()["never"] == "it is a test double"
    finally:
        del BACKENDS["never"]
