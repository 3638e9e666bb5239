"""The generated tabular classification sets (mixture, hierarchy / hierarchy_coarse) and the feature-MLP path
that carries the paper's head structure to them (mlp_small; mlp_wide, the capacity-matched vanilla)."""
import pytest
import torch

from mn.data import FINE_OF, GENERATED, load_dataset, prepare
from mn.data.generated import HIERARCHY_FINE_PER_COARSE, SPLIT_SIZES, make_hierarchy
from mn.layers import MetaNeighborhoodsHead
from mn.models import FeatureMLP, build_feature_mlp
from mn.training import make_config, train
from mn.training.config import ConfigError
from mn.training.methods import MNImageClassifier, Vanilla, build_model

SHAPES = {"mixture": (20, 10), "hierarchy": (40, 32), "hierarchy_coarse": (40, 8)}


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", GENERATED)
def test_shapes_splits_and_stratification(name):
    data = load_dataset(name)
    features, classes = SHAPES[name]
    assert (data.task, data.kind, data.num_outputs) == ("classification", "tabular", classes)
    for split, size in zip((data.train, data.val, data.test), SPLIT_SIZES):
        assert split.x.shape == (size, features) and split.x.dtype == torch.float32
        assert split.y.dtype == torch.int64 and split.y.min() >= 0 and split.y.max() < classes
        counts = split.y.bincount(minlength=classes)
        slack = HIERARCHY_FINE_PER_COARSE if name == "hierarchy_coarse" else 1     # stratified by the fine class
        assert counts.max() - counts.min() <= slack, f"{name}: split not stratified ({counts.tolist()})"
    rows = torch.cat([data.train.x, data.val.x, data.test.x])
    assert len(torch.unique(rows, dim=0)) == sum(SPLIT_SIZES), "the splits share no row"
    prepared = prepare(data)
    assert prepared.val is data.val or torch.equal(prepared.val.y, data.val.y), "the fixed validation split is used"
    assert len(prepared.train) == SPLIT_SIZES[0]


@pytest.mark.parametrize("name", GENERATED)
def test_deterministic(name):
    a, b = load_dataset(name), load_dataset(name)
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(a, split).x, getattr(b, split).x)
        assert torch.equal(getattr(a, split).y, getattr(b, split).y)


def test_hierarchy_coarse_is_a_function_of_fine_on_the_same_examples():
    fine, coarse = load_dataset("hierarchy"), load_dataset("hierarchy_coarse")
    assert FINE_OF["hierarchy_coarse"] == "hierarchy"
    for split in ("train", "val", "test"):
        f, c = getattr(fine, split), getattr(coarse, split)
        assert torch.equal(f.x, c.x), "same examples in the same order"
        assert torch.equal(c.y, f.y // HIERARCHY_FINE_PER_COARSE)


def test_hierarchy_fine_classes_lie_apart_inside_each_coarse_class():
    x, fine, centres = make_hierarchy()
    x, fine, centres = torch.as_tensor(x), torch.as_tensor(fine), torch.as_tensor(centres)
    F = HIERARCHY_FINE_PER_COARSE
    signal = x[:, :centres.shape[1]]
    # Knowing the coarse class, the nearest of its F fine centres gives the fine class: separable within it.
    own = centres.view(-1, F, centres.shape[1])[fine // F]                       # (N, F, d) the coarse class's
    nearest = (signal[:, None] - own).norm(dim=-1).argmin(1)
    assert (nearest == fine % F).float().mean() > 0.98
    # and the fine centres of a coarse class are far apart against the points' spread (0.8 per dimension)
    for k in range(len(centres) // F):
        d = torch.cdist(centres[k * F:(k + 1) * F], centres[k * F:(k + 1) * F])
        assert d[~torch.eye(F, dtype=torch.bool)].min() > 3 * 0.8


def test_hierarchy_coarse_classes_are_clusters_of_their_fine_classes():
    _, _, centres = make_hierarchy()
    centres = torch.as_tensor(centres)
    coarse = torch.arange(len(centres)) // HIERARCHY_FINE_PER_COARSE
    d = torch.cdist(centres, centres).fill_diagonal_(float("inf"))
    assert torch.equal(coarse[d.argmin(1)], coarse)             # every fine centre's nearest is a sibling
    same = coarse[:, None] == coarse[None]
    assert d[~same].mean() > 3 * d[same & d.isfinite()].mean()   # coarse clusters far apart against their size


@pytest.mark.parametrize("name", GENERATED)
def test_build_model_on_the_feature_backbone(name):
    data = prepare(load_dataset(name))
    x = data.train.x[:5]
    for flags, kind in ((dict(method="vanilla", classifier="dot"), Vanilla),
                        (dict(method="vanilla", classifier="cosine"), Vanilla), (dict(method="mn"), MNImageClassifier),
                        (dict(method="vanilla", backbone="mlp_wide"), Vanilla)):
        cfg = make_config(flags=dict(dataset=name, **flags))
        model = build_model(cfg, data)
        assert isinstance(model, kind)
        prediction, loss = model(x, data.train.y[:5])
        assert prediction.shape == (5, SHAPES[name][1]) and loss.shape == (5,)
    assert isinstance(build_model(make_config(flags=dict(dataset=name)), data).classifier.head, MetaNeighborhoodsHead)


def test_feature_mlp_last_relu_only_for_the_dot_layer():
    net, dim = build_feature_mlp("mlp_small", 7, final_relu=False)
    assert dim == 64 and isinstance(net, FeatureMLP)
    assert (net(torch.randn(50, 7)) < 0).any(), "no last ReLU: features can be negative (cosine / MN heads)"
    net, _ = build_feature_mlp("mlp_small", 7, final_relu=True)
    assert (net(torch.randn(50, 7)) >= 0).all()
    assert build_feature_mlp("mlp_wide", 7)[1] == 64, "the wide net feeds heads of the same size"


def test_vanilla_and_mn_start_from_the_same_backbone_for_a_seed():
    data = prepare(load_dataset("mixture"))
    torch.manual_seed(3)
    vanilla = build_model(make_config(flags=dict(dataset="mixture", method="vanilla", classifier="dot")), data)
    torch.manual_seed(3)
    mn = build_model(make_config(flags=dict(dataset="mixture", method="mn")), data)
    for a, b in zip(vanilla.net[0].parameters(), mn.classifier.backbone.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", GENERATED)
def test_capacity_matched_vanilla_has_at_least_the_parameters_of_mn(name):
    data = prepare(load_dataset(name))
    mn = max(n_params(build_model(make_config(flags=dict(dataset=name, inner_lr=lr)), data))
             for lr in ("scalar", "diagonal"))
    for classifier in ("dot", "cosine"):
        wide = build_model(make_config(flags=dict(dataset=name, method="vanilla", backbone="mlp_wide",
                                                  classifier=classifier)), data)
        assert n_params(wide) >= mn, (name, classifier, n_params(wide), mn)


@pytest.mark.parametrize("name, flags", [("mixture", dict(method="mn", inner_steps=3, inner_lr="diagonal")),
                                         ("hierarchy", dict(method="vanilla", classifier="dot", optimizer="sgd")),
                                         ("hierarchy_coarse", dict(method="mn")),
                                         ("mixture", dict(method="vanilla", backbone="mlp_wide"))])
def test_one_tiny_training_run(name, flags):
    cfg = make_config(flags=dict(dataset=name, epochs=1, max_steps_per_epoch=2, progress=False, **flags))
    result = train(cfg, log=lambda _: None)
    assert 0 <= result["summary"]["mean"] <= 1 and result["summary"]["metric"] == "test_accuracy"


def test_errors_name_the_argument():
    with pytest.raises(ConfigError, match="backbone 'mlp_small' is for tabular classification"):
        build_model(make_config(flags=dict(dataset="diabetes", backbone="mlp_small")),
                    prepare(load_dataset("diabetes"), fold=0))
    with pytest.raises(ConfigError, match="backbone must be one of the image backbones"):
        build_model(make_config(flags=dict(dataset="digits", backbone="mlp_wide")), prepare(load_dataset("digits")))
    with pytest.raises(ValueError, match="in_features must be a positive integer"):
        FeatureMLP(0)
    with pytest.raises(ValueError, match="hidden must be"):
        FeatureMLP(3, ())
    with pytest.raises(ValueError, match="backbone must be one of 'mlp_small', 'mlp_wide'"):
        build_feature_mlp("mlp_huge", 3)
    with pytest.raises(ValueError, match=r"x must be \(B, in_features\)"):
        FeatureMLP(3)(torch.randn(2, 3, 1))
