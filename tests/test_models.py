"""Backbones: shapes, feature sizes, the final-ReLU switch the cosine head needs, bad arguments."""
import pytest
import torch

from mn.models import BACKBONES, DenseNetBC, PreActResNet, RegressionMLP, build_backbone


@pytest.mark.parametrize("name, dim", [("resnet29", 256), ("resnet56", 256), ("densenet40bc", 132)])
def test_cifar_backbones_give_paper_feature_sizes(name, dim):
    torch.manual_seed(0)
    net, feature_dim = build_backbone(name, final_relu=False)
    z = net.eval()(torch.randn(2, 3, 32, 32))
    assert feature_dim == dim and z.shape == (2, dim)
    assert (z < 0).any(), "without the last ReLU features take both signs (paper, cosine output layer)"


def test_resnet_depths_have_9k_plus_2_layers_of_bottlenecks():
    assert len(PreActResNet(29).stages) == 9 and len(PreActResNet(56).stages) == 18


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
    with pytest.raises(ValueError, match="depth must be 6k"):
        DenseNetBC(41)
    with pytest.raises(ValueError, match="in_features"):
        RegressionMLP(0)
    with pytest.raises(ValueError, match="8, 8"):
        build_backbone("digits_cnn", in_channels=1)[0](torch.randn(1, 1, 32, 32))
    assert set(BACKBONES) == {"resnet29", "resnet56", "densenet40bc", "digits_cnn"}
