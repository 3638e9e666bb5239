"""Backbones: shapes, feature sizes and parameter counts of the authors' layouts (network/resnet.py,
network/densenet.py of lupalab/Meta-Neighborhoods), the final-ReLU switch the cosine head needs, bad arguments."""
import pytest
import torch

from mn.models import BACKBONES, DenseNetBC, PreActResNet, RegressionMLP, build_backbone
from mn.models.densenet import DenseLayer


@pytest.mark.parametrize("name, dim", [("resnet29", 256), ("resnet56", 256), ("densenet40bc", 258)])
def test_cifar_backbones_give_paper_feature_sizes(name, dim):
    torch.manual_seed(0)
    net, feature_dim = build_backbone(name, final_relu=False)
    z = net.eval()(torch.randn(2, 3, 32, 32))
    assert feature_dim == dim and z.shape == (2, dim)
    assert (z < 0).any(), "without the last ReLU features take both signs (paper, cosine output layer)"


def test_resnet_depths_have_9k_plus_2_layers_of_bottlenecks():
    assert len(PreActResNet(29).stages) == 9 and len(PreActResNet(56).stages) == 18


def _count(net):
    return sum(p.numel() for p in net.parameters())


def _authors_resnet_parameters(k: int) -> int:
    """Parameters of the authors' ResNet_V2(filters=16, depth 9k + 2), counted from their layout: a conv-BN stem
    of 16, stages of k units with (bottleneck width, output) (16, 64), (64, 128), (128, 256); each unit
    [BN] 1x1 (in -> width), BN 3x3, BN 1x1 (-> out), the first of a stage with a 1x1 projection and without
    the leading BN in stage 1; a final BN."""
    total, channels = 3 * 9 * 16 + 2 * 16, 16
    for stage, (width, out) in enumerate(((16, 64), (64, 128), (128, 256))):
        for unit in range(k):
            bn1 = 0 if stage == 0 and unit == 0 else 2 * channels
            total += bn1 + channels * width + 2 * width + 9 * width * width + 2 * width + width * out
            total += channels * out if unit == 0 else 0
            channels = out
    return total + 2 * channels


def _authors_densenet_parameters(layers: int = 12, growth: int = 12) -> int:
    """Their DenseNet(filters=12): 3x3 conv to 24, blocks of `layers` bottleneck layers (BN, 1x1 to 48, BN, 3x3
    to 12), transitions (BN, 1x1 halving), a final BN."""
    channels, total = 2 * growth, 3 * 9 * 2 * growth
    for block in range(3):
        for _ in range(layers):
            total += 2 * channels + channels * 4 * growth + 2 * 4 * growth + 9 * 4 * growth * growth
            channels += growth
        if block < 2:
            total += 2 * channels + channels * (channels // 2)
            channels //= 2
    return total + 2 * channels


def test_parameter_counts_match_the_authors_layouts():
    assert _count(build_backbone("resnet29")[0]) == _authors_resnet_parameters(3) == 838160
    assert _count(build_backbone("resnet56")[0]) == _authors_resnet_parameters(6)
    assert _count(build_backbone("densenet40bc")[0]) == _authors_densenet_parameters() == 484140


def test_resnet_stage_widths_and_strides_are_the_authors():
    net = PreActResNet(29)
    first = [net.stages[i] for i in (0, 3, 6)]
    assert [(u.conv1.out_channels, u.conv3.out_channels) for u in first] == [(16, 64), (64, 128), (128, 256)]
    assert [u.conv1.stride for u in first] == [(1, 1), (2, 2), (2, 2)], "the stride sits in the first 1x1 conv"
    assert first[0].bn1 is None and first[1].bn1 is not None, "the first unit follows the stem's BN-ReLU"
    assert all(u.shortcut is not None for u in first) and net.stages[1].shortcut is None
    assert net(torch.randn(1, 3, 32, 32)).shape == (1, 256)


@pytest.mark.parametrize("name", ["resnet29", "densenet40bc"])
def test_initialisation_and_batch_norm_are_the_authors(name):
    """Their conv_layer draws Glorot-uniform kernels (xavier_initializer_conv2d); their batch_norm has epsilon 1e-3
    and decay 0.9 (torch's momentum 0.1)."""
    torch.manual_seed(0)
    net, _ = build_backbone(name)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(m.eps == 1e-3 and m.momentum == 0.1 for m in norms)
    conv = max((m for m in net.modules() if isinstance(m, torch.nn.Conv2d)), key=lambda m: m.weight.numel())
    out_c, in_c, kh, kw = conv.weight.shape
    limit = (6 / ((in_c + out_c) * kh * kw)) ** 0.5
    w = conv.weight.detach()
    assert w.abs().max() <= limit and w.std().item() == pytest.approx(limit / 3 ** 0.5, rel=0.05)


def test_densenet_has_three_blocks_of_twelve_layers_and_dropout():
    net = DenseNetBC()
    assert sum(isinstance(m, DenseLayer) for m in net.modules()) == 36
    assert {m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)} == {0.2}
    net.train()
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    assert not torch.equal(net(x), net(x)), "dropout is active in training"
    net.eval()
    assert torch.equal(net(x), net(x))


@pytest.mark.parametrize("name, shape", [("digits_cnn", (3, 1, 8, 8)), ("resnet29", (2, 3, 32, 32))])
def test_final_relu_makes_features_non_negative(name, shape):
    torch.manual_seed(0)
    net, _ = build_backbone(name, in_channels=shape[1], final_relu=True)
    assert (net.eval()(torch.randn(shape)) >= 0).all()


def test_regression_mlp_is_three_hidden_layers_of_128():
    mlp = RegressionMLP(10, 2)
    linears = [m for m in mlp if isinstance(m, torch.nn.Linear)]
    assert [l.out_features for l in linears] == [128, 128, 128, 2]
    assert mlp(torch.randn(4, 10)).shape == (4, 2)


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="backbone must be one of"):
        build_backbone("vgg")
    with pytest.raises(ValueError, match="depth must be 9k"):
        PreActResNet(30)
    with pytest.raises(ValueError, match="layers_per_block"):
        DenseNetBC(layers_per_block=0)
    with pytest.raises(ValueError, match="dropout"):
        DenseNetBC(dropout=1.0)
    with pytest.raises(ValueError, match="in_features"):
        RegressionMLP(0)
    with pytest.raises(ValueError, match="8, 8"):
        build_backbone("digits_cnn", in_channels=1)[0](torch.randn(1, 1, 32, 32))
    assert set(BACKBONES) == {"resnet29", "resnet56", "densenet40bc", "digits_cnn", "digits_cnn_wide", "mnist_cnn",
                              "mnist_cnn_wide"}
