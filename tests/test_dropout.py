"""Entry dropout: the torch mask equals an independent uint32 implementation of the hash in docs/design.md,
"Entry dropout", and the mask used by forward is the one used by backward."""
import numpy as np
import pytest
import torch

import mn
from mn_kernels.dropout import drop_threshold, keep_mask, seed_mix

from helpers import make_inputs


def numpy_keep_mask(seed, B, S, p):
    """The hash of docs/design.md, "Entry dropout", written again with numpy uint32 arithmetic (wraps mod 2^32
    natively)."""
    with np.errstate(over="ignore"):
        i = np.arange(B, dtype=np.uint32)[:, None]
        j = np.arange(S, dtype=np.uint32)[None, :]
        x = np.uint32(seed % 2**32) * np.uint32(0x9E3779B1) ^ (i * np.uint32(0x85EBCA77)) ^ (j * np.uint32(0xC2B2AE3D))
        x ^= x >> np.uint32(16)
        x *= np.uint32(0x85EBCA6B)
        x ^= x >> np.uint32(13)
        x *= np.uint32(0xC2B2AE35)
        x ^= x >> np.uint32(16)
    return ~((x >> np.uint32(8)).astype(np.float64) < p * 2**24)          # the design's comparison, in reals


@pytest.mark.parametrize("seed", [0, 1, 12345, 2**40 + 17])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_mask_matches_independent_hash(seed, p):
    B, S = 37, 501
    got = keep_mask(seed_mix(seed), torch.arange(B), torch.arange(S), p).numpy()
    np.testing.assert_array_equal(got, numpy_keep_mask(seed, B, S, p))
    assert abs(1 - got.mean() - p) < 0.02            # the drop rate is p


@pytest.mark.parametrize("p", [0.3, 0.5, 1 / 3, 0.999])
def test_integer_threshold_is_designs_real_comparison(p):
    """(x >> 8) < p * 2^24 for integers (x >> 8) is (x >> 8) < ceil(p * 2^24), also when p * 2^24 is fractional."""
    t = drop_threshold(p)
    for y in range(t - 2, t + 3):
        assert (y < p * 2**24) == (y < t), y


def test_mask_of_column_chunk_is_the_slice():
    full = keep_mask(seed_mix(5), torch.arange(8), torch.arange(100), 0.5)
    part = keep_mask(seed_mix(5), torch.arange(8), torch.arange(40, 73), 0.5)
    assert torch.equal(full[:, 40:73], part)


@pytest.mark.parametrize("backend", ["autograd", "torch"])
def test_forward_and_backward_use_one_mask(backend):
    """The inner loss equals the attention average of per-entry CE over exactly the kept entries, and entries
    dropped for every query receive no gradient at all (so backward did not draw another mask)."""
    B, S, C, n = 3, 40, 4, 5
    z, keys, values, weight, tau = make_inputs(B, S, C, n, requires_grad=True, seed=2)
    grad, loss = mn.inner_gradient(z, keys, values, weight, tau, gamma=3.0, entry_dropout=0.6, seed=9,
                                   backend=backend)
    (grad.sum() + loss.sum()).backward()
    keep = torch.from_numpy(numpy_keep_mask(9, B, S, 0.6))
    with torch.no_grad():
        kh = keys / keys.norm(dim=1, keepdim=True)
        s = 3.0 * (z / z.norm(dim=1, keepdim=True)) @ kh.T
        w = torch.softmax(s.masked_fill(~keep, float("-inf")), 1)
        p = torch.softmax(tau * kh @ (weight / weight.norm(dim=1, keepdim=True)).T, 1)
        expected = (w * -(values * p.log()).sum(1)).sum(1)
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-12, atol=1e-12)
    unused = ~keep.any(0)
    assert unused.any() and keep.any(0).any()
    assert torch.all(keys.grad[unused] == 0) and torch.all(values.grad[unused] == 0)
    assert torch.all(keys.grad[~unused].abs().sum(1) > 0)


@pytest.mark.parametrize("backend", ["autograd", "torch"])
def test_query_with_all_entries_dropped_keeps_weight(backend):
    z, keys, values, weight, tau = make_inputs(6, 3, 3, 4, requires_grad=True, seed=3)
    keep = torch.from_numpy(numpy_keep_mask(4, 6, 3, 0.9))
    empty = ~keep.any(1)
    assert empty.any() and (~empty).any()
    grad, loss = mn.inner_gradient(z, keys, values, weight, tau, gamma=3.0, entry_dropout=0.9, seed=4,
                                   backend=backend)
    assert torch.all(grad[empty] == 0) and torch.all(loss[empty] == 0)
    (grad.sum() + loss.sum()).backward()
    assert all(torch.isfinite(t.grad).all() for t in (z, keys, values, weight, tau))
    assert torch.all(z.grad[empty] == 0)


def test_seed_none_draws_from_torch_generator():
    inputs = make_inputs(4, 30, 3, 5, seed=5)
    torch.manual_seed(0)
    a = mn.inner_gradient(*inputs, gamma=3.0, entry_dropout=0.5)[1]
    b = mn.inner_gradient(*inputs, gamma=3.0, entry_dropout=0.5)[1]
    torch.manual_seed(0)
    c = mn.inner_gradient(*inputs, gamma=3.0, entry_dropout=0.5)[1]
    assert not torch.equal(a, b) and torch.equal(a, c)
