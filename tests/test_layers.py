"""nn layers: the Module agrees with the functional form, state dicts round-trip, losses compose as Eq. 14,
and the generic f_phi wrapper equals a literal per-example MAML computation."""
import io

import pytest
import torch
from torch import nn
from torch.func import functional_call

import mn

from helpers import reorder_tol


@pytest.mark.parametrize("inner_lr", ["scalar", "feature", "elementwise"])
def test_head_equals_functional(inner_lr):
    torch.manual_seed(0)
    head = mn.MetaNeighborhoodsHead(6, 4, num_entries=20, inner_lr=inner_lr, inner_steps=2).double()
    z = torch.randn(5, 6, dtype=torch.float64)
    expected = mn.adapted_logits(z, head.keys, torch.softmax(10 * head.value_logits, 1), head.weight, head.tau,
                                 head.inner_lr.abs(), gamma=5.0, inner_steps=2, backend="autograd")
    torch.testing.assert_close(head(z), expected, rtol=1e-12, atol=1e-12)
    assert head.inner_lr.shape == {"scalar": (), "feature": (6,), "elementwise": (4, 6)}[inner_lr]


def test_head_initialisation_follows_the_authors_code():
    """Keys ~ N(0, 0.05); values softmax(10 * raw), raw ~ N(0, 0.01) truncated at two std (their maml.py)."""
    torch.manual_seed(0)
    head = mn.MetaNeighborhoodsHead(64, 10, num_entries=4000)
    assert abs(head.keys.std().item() - 0.05) < 0.003
    raw = head.value_logits
    assert raw.abs().max().item() <= 0.02 and 0.0085 < raw.std().item() < 0.0090    # 0.01 * 0.8796 truncated
    torch.testing.assert_close(head.values, torch.softmax(10 * raw, 1))
    assert head.tau.item() == 10.0 and head.inner_lr.item() == pytest.approx(0.05)
    torch.testing.assert_close(head.values.sum(1), torch.ones(4000))


def test_entry_dropout_only_in_training():
    torch.manual_seed(0)
    head = mn.MetaNeighborhoodsHead(6, 3, num_entries=30, entry_dropout=0.5).double()
    z = torch.randn(4, 6, dtype=torch.float64)
    head.eval()
    plain = head(z)
    torch.testing.assert_close(plain, mn.adapted_logits(z, head.keys, head.values, head.weight, head.tau,
                                                        head.inner_lr.abs(), gamma=5.0))
    head.train()
    assert not torch.allclose(head(z), plain)


def test_head_gradients_reach_every_parameter():
    torch.manual_seed(0)
    head = mn.MetaNeighborhoodsHead(6, 3, num_entries=30, inner_lr="feature")
    z = torch.randn(8, 6, requires_grad=True)
    torch.nn.functional.cross_entropy(head(z), torch.randint(0, 3, (8,))).backward()
    for name, p in list(head.named_parameters()) + [("z", z)]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def _roundtrip(module):
    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_state_dicts_roundtrip():
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Linear(5, 6), nn.Tanh())
    model = mn.MetaNeighborhoodsClassifier(backbone, mn.MetaNeighborhoodsHead(6, 3, num_entries=12, inner_lr="feature"))
    generic = mn.MetaNeighborhoods(nn.Linear(4, 2), 4, 2, 9, inner_lr="elementwise")
    torch.manual_seed(1)
    model2 = mn.MetaNeighborhoodsClassifier(nn.Sequential(nn.Linear(5, 6), nn.Tanh()),
                                            mn.MetaNeighborhoodsHead(6, 3, num_entries=12, inner_lr="feature"))
    generic2 = mn.MetaNeighborhoods(nn.Linear(4, 2), 4, 2, 9, inner_lr="elementwise")
    model2.load_state_dict(_roundtrip(model))
    generic2.load_state_dict(_roundtrip(generic))
    x, x4 = torch.randn(3, 5), torch.randn(3, 4)
    model.eval(), model2.eval()
    assert torch.equal(model(x).logits, model2(x).logits) and torch.equal(model(x).aux_logits, model2(x).aux_logits)
    assert torch.equal(generic(x4), generic2(x4))


def test_classifier_losses_follow_eq14():
    torch.manual_seed(0)
    head = mn.MetaNeighborhoodsHead(6, 3, num_entries=12)
    model = mn.MetaNeighborhoodsClassifier(nn.Linear(5, 6), head, aux_weight=0.7)
    x, y = torch.randn(4, 5), torch.tensor([0, 1, 2, 1])
    out = model(x, y)
    z = model.backbone(x)
    torch.testing.assert_close(out.logits, head(z))
    torch.testing.assert_close(out.aux_logits, model.aux_head.tau * nn.functional.normalize(z) @
                               nn.functional.normalize(model.aux_head.weight).T)
    ce = nn.functional.cross_entropy
    torch.testing.assert_close(out.loss, ce(out.logits, y) + 0.7 * ce(out.aux_logits, y))
    assert model(x).loss is None
    no_aux = mn.MetaNeighborhoodsClassifier(nn.Linear(5, 6), head, aux_weight=0)
    assert no_aux.aux_head is None and torch.equal(no_aux(x, y).loss, no_aux(x, y).outer_loss)


def test_vanilla_classifiers():
    torch.manual_seed(0)
    cos = mn.CosineClassifier(6, 3, tau_init=4.0)
    z = torch.randn(5, 6)
    torch.testing.assert_close(cos(z), 4.0 * torch.nn.functional.cosine_similarity(z[:, None], cos.weight[None], -1))
    dot = mn.DotClassifier(6, 3)
    torch.testing.assert_close(dot(z), z @ dot.weight.T + dot.bias)


def _literal_generic(m, x):
    """Per query: the weighted inner loss over all entries, autograd.grad(create_graph) steps, then predict."""
    params = dict(m.net.named_parameters())
    w = m.attention(x)
    outs = []
    for i in range(x.shape[0]):
        p = dict(params)
        for _ in range(m.inner_steps):
            pred = functional_call(m.net, p, (m.keys,))
            if m.inner_loss == "mse":
                per_entry = ((pred - m.values) ** 2).mean(-1)
            else:
                per_entry = -(m.values * torch.log_softmax(pred, -1)).sum(-1)
            grads = torch.autograd.grad((w[i] * per_entry).sum(), list(p.values()), create_graph=True)
            p = {k: v - m.inner_lr[k.replace(".", "/")].abs() * g for (k, v), g in zip(p.items(), grads)}
        outs.append(functional_call(m.net, p, (x[i:i + 1],))[0])
    return torch.stack(outs)


@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("similarity,loss,lr", [("cosine", "mse", "scalar"), ("euclidean", "ce", "elementwise"),
                                               ("euclidean", "mse", "elementwise")])
def test_generic_equals_literal(similarity, loss, lr, steps):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    m = mn.MetaNeighborhoods(net, 3, 2, 11, similarity=similarity, inner_loss=loss, inner_lr=lr,
                             inner_lr_init=0.3, inner_steps=steps, gamma=2.0).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    got, expected = m(x), _literal_generic(m, x)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    r = torch.randn_like(got)
    params = list(m.parameters())
    for a, b in zip(torch.autograd.grad((got * r).sum(), params), torch.autograd.grad((expected * r).sum(), params)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # Without grad mode the per-entry gradients are not kept for a second order: another path, same math.
    with torch.no_grad():
        torch.testing.assert_close(m(x), got.detach(), **reorder_tol(got.dtype))
    with torch.inference_mode():
        torch.testing.assert_close(m(x), got.detach(), **reorder_tol(got.dtype))
