"""Interpretability helpers against direct computations on the full B x S attention."""
import pytest
import torch

import mn
from mn.analysis import attention_topk, entry_classes, inner_step_size


@pytest.mark.parametrize("chunk", [3, 7, 100])
def test_attention_topk_equals_full_softmax(chunk):
    g = torch.Generator().manual_seed(0)
    z, keys = torch.randn(6, 5, generator=g, dtype=torch.float64), torch.randn(23, 5, generator=g, dtype=torch.float64)
    full = torch.softmax(4.0 * torch.nn.functional.normalize(z) @ torch.nn.functional.normalize(keys).T, dim=1)
    expected_w, expected_i = full.topk(4, dim=1)
    w, i = attention_topk(z, keys, gamma=4.0, k=4, chunk_size=chunk)
    assert torch.equal(i, expected_i)
    torch.testing.assert_close(w, expected_w, rtol=1e-12, atol=1e-14)


def test_attention_topk_rejects_bad_arguments():
    z, keys = torch.randn(2, 3), torch.randn(4, 3)
    with pytest.raises(ValueError, match="k must be at most the number of entries S = 4"):
        attention_topk(z, keys, gamma=1.0, k=5)
    with pytest.raises(ValueError, match="gamma must be a finite number > 0"):
        attention_topk(z, keys, gamma=0.0)
    with pytest.raises(ValueError, match="must share n"):
        attention_topk(z, torch.randn(4, 2), gamma=1.0)


def test_entry_classes_and_step_size():
    torch.manual_seed(0)
    head = mn.MetaNeighborhoodsHead(6, 3, num_entries=20, inner_lr="feature").double().eval()
    values, classes = entry_classes(head)
    torch.testing.assert_close(values, torch.softmax(head.value_logits, 1))
    assert torch.equal(classes, values.argmax(1))
    z = torch.randn(4, 6, dtype=torch.float64)
    grad, _ = mn.inner_gradient(z, head.keys, head.values, head.weight, head.tau, gamma=head.gamma,
                                backend="autograd")
    expected = torch.stack([(head.inner_lr.abs() * g).norm() for g in grad]) / head.weight.norm()
    torch.testing.assert_close(inner_step_size(head, z), expected.detach(), rtol=1e-12, atol=1e-14)
