"""The paper's training augmentation (mn/data/augment.py): each AutoAugment op against a hand-derived result on
small synthetic images, the CIFAR-10 policy table, Cutout, the order of the pipeline, determinism, and how
`prepare` / `Prepared.inputs` switch it on and off."""
import numpy as np
import pytest
import torch

from mn.data import Split, TaskData, augment, load_dataset, prepare
from mn.data.augment import CIFAR10_POLICY, OPS, apply_op, augment_batch, auto_augment, cutout, magnitude

FILL = 128


def images(*shape, seed=0):
    return torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# -- the ops -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("channels", [1, 3])
def test_point_ops(channels):
    x = images(channels, 5, 7)
    v = x.long()
    assert torch.equal(apply_op(x, "invert", 0.0).long(), 255 - v)
    for bits in (4, 5, 6, 7, 8):
        keep = 256 - 2 ** (8 - bits)                     # the top `bits` bits
        assert torch.equal(apply_op(x, "posterize", bits).long(), v & keep), bits
    for threshold in (0.0, 100.0, 199.1, 256.0):
        expected = torch.where(v < threshold, v, 255 - v)
        assert torch.equal(apply_op(x, "solarize", threshold).long(), expected), threshold


def test_autocontrast_stretches_each_channel_to_the_full_range():
    # (x - lo) * 255 / (hi - lo) per channel; ranges of 51 and 85 make the scale exact (5 and 3): PIL truncates
    # the float result, so an inexact scale can give 254 for the top value
    lo, hi = torch.tensor([50, 20, 0]).view(3, 1, 1), torch.tensor([101, 105, 255]).view(3, 1, 1)
    x = torch.zeros(3, 4, 4, dtype=torch.long)
    x[:, 0], x[:, 1], x[:, 2:] = lo[:, 0], hi[:, 0], lo + 17
    out = apply_op(x.to(torch.uint8), "autocontrast", 0.0)
    assert torch.equal(out.long(), (x - lo) * 255 // (hi - lo))


def test_equalize_spreads_four_equal_levels():
    # four values, 256 pixels each: PIL's step = (1024 - 256) // 255 = 3, lut = cumulative count // 3
    x = torch.tensor([0, 10, 20, 30], dtype=torch.uint8).repeat_interleave(256).view(1, 32, 32)
    out = apply_op(x, "equalize", 0.0)
    expected = torch.tensor([0, 85, 171, 255], dtype=torch.uint8).repeat_interleave(256).view(1, 32, 32)
    assert torch.equal(out, expected)


def test_brightness_scales_pixels():
    x = (images(3, 4, 4) // 2) * 2                        # even values: x * 0.5 is exact
    assert torch.equal(apply_op(x, "brightness", -0.5), x // 2)
    y = torch.tensor([100, 200], dtype=torch.uint8).view(1, 1, 2)
    assert apply_op(y, "brightness", 0.9).tolist() == [[[190, 255]]]


def test_contrast_blends_towards_the_mean_grey():
    x = torch.full((1, 4, 4), 100, dtype=torch.uint8)
    x[:, 2:] = 200                                         # mean 150
    out = apply_op(x, "contrast", -0.5)
    assert torch.equal(out, torch.where(x == 100, 125, 175).to(torch.uint8))


def test_color_leaves_grey_and_moves_saturation():
    grey = images(1, 4, 4).expand(3, 4, 4).contiguous()
    for m in (-0.9, 0.5, 0.9):
        assert torch.equal(apply_op(grey, "color", m), grey)
    x = torch.tensor([160, 100, 40], dtype=torch.uint8).view(3, 1, 1).expand(3, 4, 4).contiguous()
    spread = lambda t: int(t.amax(0).min() - t.amin(0).max())       # noqa: E731
    assert spread(apply_op(x, "color", -0.5)) < spread(x) < spread(apply_op(x, "color", 0.5))


def test_sharpness_blends_with_the_smoothed_image():
    # SMOOTH is [[1,1,1],[1,5,1],[1,1,1]] / 13: a 130 spike smooths to 50 at its pixel, 10 around it
    x = torch.zeros(1, 5, 5, dtype=torch.uint8)
    x[0, 2, 2] = 130
    soft = apply_op(x, "sharpness", -0.5)                  # factor 0.5: smooth + 0.5 (x - smooth)
    expected = torch.zeros(5, 5, dtype=torch.uint8)
    expected[1:4, 1:4] = 5
    expected[2, 2] = 90
    assert torch.equal(soft[0], expected)
    sharp = apply_op(x, "sharpness", 0.5)                  # factor 1.5: the ring goes negative, clipped
    expected = torch.zeros(5, 5, dtype=torch.uint8)
    expected[2, 2] = 170
    assert torch.equal(sharp[0], expected)


@pytest.mark.parametrize("sign", [1, -1])
def test_translate_moves_by_whole_pixels_and_fills_grey(sign):
    x = torch.arange(64, dtype=torch.uint8).view(1, 8, 8)
    out = apply_op(x, "translateX", sign * 3 / 8)          # a fraction of the side: 3 pixels
    expected = torch.full_like(x, FILL)
    if sign > 0:                                           # output (r, c) reads input (r, c + 3)
        expected[..., :5] = x[..., 3:]
    else:
        expected[..., 3:] = x[..., :5]
    assert torch.equal(out, expected)
    out = apply_op(x, "translateY", sign * 3 / 8)
    expected = torch.full_like(x, FILL)
    if sign > 0:
        expected[:, :5] = x[:, 3:]
    else:
        expected[:, 3:] = x[:, :5]
    assert torch.equal(out, expected)


@pytest.mark.parametrize("m", [2.0, -2.0])
def test_shear_moves_row_by_row(m):
    # PIL samples pixel centres: output (r, c) of shearX reads input column c + m (r + 1/2), a whole column
    # for m = +-2, where bicubic weights are 0 and 1
    x = (torch.arange(16, dtype=torch.uint8) + 10).repeat(3, 3, 1)
    out = apply_op(x, "shearX", m)
    expected = torch.full_like(x, FILL)
    for r in range(3):
        for c in range(16):
            src = c + int(m * (r + 0.5))
            if 0 <= src < 16:
                expected[:, r, c] = x[:, r, src]
    assert torch.equal(out, expected)
    xt = x.transpose(1, 2).contiguous()
    assert torch.equal(apply_op(xt, "shearY", m), expected.transpose(1, 2))


def test_rotate_is_counter_clockwise_and_matches_the_authors_grey_composite():
    from PIL import Image
    x = images(3, 6, 6)
    assert torch.equal(apply_op(x, "rotate", 90.0), torch.rot90(x, 1, (1, 2)))
    assert torch.equal(apply_op(x[:1], "rotate", 90.0), torch.rot90(x[:1], 1, (1, 2)))
    # theirs: rotate an RGBA copy, composite it on grey (128, 128, 128, 128), convert back
    y = images(3, 32, 32, seed=1)
    img = Image.fromarray(y.permute(1, 2, 0).numpy().copy())
    for angle in (magnitude("rotate", 2), 17.0):
        rot = img.convert("RGBA").rotate(angle)
        theirs = Image.composite(rot, Image.new("RGBA", rot.size, (FILL,) * 4), rot).convert(img.mode)
        ours = apply_op(y, "rotate", angle)
        assert torch.equal(ours, torch.from_numpy(np.array(theirs)).permute(2, 0, 1)), angle
        assert (ours == FILL).all(0).any()                 # corners filled grey


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("op", sorted(OPS))
def test_every_op_keeps_shape_and_dtype(op, channels):
    x = images(channels, 8, 6)
    out = apply_op(x, op, magnitude(op, 9))
    assert out.shape == x.shape and out.dtype == torch.uint8


# -- the policy table ---------------------------------------------------------------------------------------

def test_cifar10_policy_table():
    assert len(CIFAR10_POLICY) == 25
    assert all(len(sub) == 2 for sub in CIFAR10_POLICY)
    assert {op for sub in CIFAR10_POLICY for op, _, _ in sub} <= set(OPS) and len(OPS) == 14
    assert all(0 <= p <= 1 and 0 <= level <= 9 for sub in CIFAR10_POLICY for _, p, level in sub)
    # spot checks against Cubuk et al. 2019's published CIFAR-10 policy
    assert CIFAR10_POLICY[0] == (("invert", 0.1, 7), ("contrast", 0.2, 6))
    assert CIFAR10_POLICY[1] == (("rotate", 0.7, 2), ("translateX", 0.3, 9))
    assert CIFAR10_POLICY[14] == (("solarize", 0.5, 2), ("invert", 0.0, 3))
    assert CIFAR10_POLICY[17] == (("color", 0.9, 9), ("equalize", 0.6, 6))
    assert CIFAR10_POLICY[24] == (("translateY", 0.7, 9), ("autocontrast", 0.9, 1))


def test_magnitude_ranges():
    assert [magnitude("posterize", level) for level in range(10)] == [8, 8, 7, 7, 6, 6, 5, 5, 4, 4]
    for op, stop in [("shearX", 0.3), ("translateY", 150 / 331), ("rotate", 30.0), ("color", 0.9)]:
        assert np.allclose([magnitude(op, level) for level in range(10)], np.linspace(0, stop, 10)), op
    assert np.allclose([magnitude("solarize", level) for level in range(10)], np.linspace(256, 0, 10))
    with pytest.raises(ValueError, match="level must be"):
        magnitude("rotate", 10)
    with pytest.raises(ValueError, match="op must be"):
        magnitude("Rotate", 1)


# -- AutoAugment, Cutout, the pipeline ----------------------------------------------------------------------

def test_auto_augment_applies_both_ops_in_order_with_their_probabilities():
    x = images(4, 3, 8, 8)
    first_posterize = ((("posterize", 1.0, 9), ("invert", 1.0, 0)),)      # 4 bits, then invert
    out = auto_augment(x, gen(), policy=first_posterize)
    assert torch.equal(out.long(), 255 - (x.long() & 0xF0))
    never = ((("invert", 0.0, 0), ("posterize", 0.0, 9)),)
    assert torch.equal(auto_augment(x, gen(), policy=never), x)


def test_auto_augment_draws_the_sign_of_signed_ops():
    x = torch.full((32, 1, 8, 8), 7, dtype=torch.uint8)
    out = auto_augment(x, gen(), policy=((("translateX", 1.0, 9), ("invert", 0.0, 0)),))
    left = (out[:, 0, :, -1] == FILL).all(1)               # moved left: grey on the right
    right = (out[:, 0, :, 0] == FILL).all(1)
    assert bool((left ^ right).all()) and 0 < int(left.sum()) < 32


def test_cutout_zeroes_one_clipped_square_per_image():
    x = torch.full((256, 3, 32, 32), 200, dtype=torch.uint8)
    out = cutout(x, gen(), size=16)
    hit = out == 0
    assert torch.equal(hit, hit[:, :1].expand_as(hit)) and bool((out[~hit] == 200).all())
    sides = []
    for mask in hit[:, 0]:
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        assert int(mask.sum()) == len(rows) * len(cols)                      # one filled rectangle
        assert torch.equal(rows, torch.arange(rows[0], rows[-1] + 1))
        assert torch.equal(cols, torch.arange(cols[0], cols[-1] + 1))
        for idx in (rows, cols):
            lo, hi = int(idx[0]), int(idx[-1]) + 1
            assert hi - lo == 16 or lo == 0 or hi == 32                       # clipped only at a border
            assert 8 <= hi - lo <= 16
        sides += [len(rows), len(cols)]
    assert 16 in sides and min(sides) < 12                 # whole squares and clipped ones both occur


def test_pipeline_order_crop_then_autoaugment_then_cutout(monkeypatch):
    # AutoAugment replaced by invert: the crop's black padding turns white (crop ran first), the Cutout
    # square stays black (Cutout ran last)
    monkeypatch.setattr(augment, "_auto_augment", lambda x, generator: 255 - x)
    out = augment_batch(torch.full((16, 3, 32, 32), 100, dtype=torch.uint8), gen())
    assert set(out.unique().tolist()) == {0, 155, 255}
    assert bool(((out == 0).flatten(1).sum(1) > 0).all())


@pytest.mark.parametrize("channels", [1, 3])
def test_augment_batch_shape_dtype_and_determinism(channels):
    x = images(8, channels, 16, 12)
    g1, g2 = gen(5), gen(5)
    a, b = augment_batch(x, g1), augment_batch(x, g2)
    assert a.shape == x.shape and a.dtype == torch.uint8 and torch.equal(a, b)
    assert not torch.equal(a, augment_batch(x, gen(6)))
    assert torch.equal(x, images(8, channels, 16, 12))     # the stored images are not touched
    # a fixed count of draws per batch, whatever the images and whatever fired: the generator stays in step
    augment_batch(images(8, channels, 16, 12, seed=3), g2)
    augment_batch(x, g1)
    assert torch.equal(torch.rand(4, generator=g1), torch.rand(4, generator=g2))


def test_bad_input_names_the_argument():
    x = images(2, 3, 8, 8)
    with pytest.raises(ValueError, match="x must be a uint8"):
        augment_batch(x.float(), gen())
    with pytest.raises(ValueError, match=r"x must have shape \(B, C, H, W\)"):
        augment_batch(x[0], gen())
    with pytest.raises(ValueError, match="C = 1 or 3"):
        augment_batch(images(2, 2, 8, 8), gen())
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        augment_batch(x.tolist(), gen())
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        augment_batch(x, None)
    with pytest.raises(ValueError, match=r"image must have shape \(C, H, W\)"):
        apply_op(x, "invert", 0.0)
    with pytest.raises(ValueError, match="op must be"):
        apply_op(x[0], "blur", 0.0)


# -- prepare / Prepared.inputs -------------------------------------------------------------------------------

def cifar_like(augment=True, n=12):
    x, y = images(n, 3, 32, 32), torch.arange(n) % 10
    return TaskData("cifar_like", "classification", "image", Split(x, y), Split(x[:4], y[:4]), num_outputs=10,
                    augment=augment)


def test_prepare_augment_default_on_and_off():
    data = cifar_like()
    assert prepare(data, val_fraction=0).augment
    assert prepare(data, val_fraction=0, augment=True).augment
    assert not prepare(cifar_like(augment=False), val_fraction=0).augment
    off = prepare(data, val_fraction=0, augment=False)
    assert not off.augment
    x = data.train.x[:8]
    assert torch.equal(off.inputs(x, generator=gen()), off.inputs(x))


def test_training_path_augments_and_evaluation_path_only_normalises():
    p = prepare(cifar_like(), val_fraction=0)
    x = p.train.x[:8]
    plain = (x.float() - p.mean[:, None, None]) / p.std[:, None, None]
    assert torch.equal(p.inputs(x), plain)
    trained = p.inputs(x, generator=gen(1))
    assert trained.dtype == torch.float32 and trained.shape == x.shape and not torch.equal(trained, plain)
    assert torch.equal(trained, p.inputs(x, generator=gen(1)))
    expected = (augment_batch(x, gen(1)).float() - p.mean[:, None, None]) / p.std[:, None, None]
    assert torch.equal(trained, expected)


def test_cutout_is_black_in_the_normalised_image(monkeypatch):
    # as theirs, Cutout sets uint8 pixels to 0 before the scaling: (0 - mean) / std per channel after ours
    monkeypatch.setattr(augment, "random_crop_flip", lambda x, generator: x)
    monkeypatch.setattr(augment, "_auto_augment", lambda x, generator: x)
    p = prepare(cifar_like(), val_fraction=0)
    x = torch.full((4, 3, 32, 32), 200, dtype=torch.uint8)
    out = p.inputs(x, generator=gen())
    black = (-p.mean / p.std)[None, :, None, None].expand_as(out)
    cut = out == black
    assert torch.equal(cut, cut[:, :1].expand_as(cut)) and bool(cut.any())
    assert torch.allclose(out[~cut], ((200 - p.mean) / p.std)[None, :, None, None].expand_as(out)[~cut])


def test_prepare_refuses_augment_on_other_inputs():
    with pytest.raises(ValueError, match="augment=True needs uint8 images"):
        prepare(load_dataset("digits"), augment=True)
    with pytest.raises(ValueError, match="augment=True needs uint8 images.*; spirals has tabular inputs"):
        prepare(load_dataset("spirals"), augment=True)
    two = TaskData("two_channels", "classification", "image", Split(images(4, 2, 8, 8), torch.zeros(4).long()),
                   None, num_outputs=2, augment=True)
    with pytest.raises(ValueError, match=r"augment=True needs uint8 images.*; two_channels's inputs must have shape"):
        prepare(two, fold=0, folds=2)
    with pytest.raises(ValueError, match="augment must be None, True or False"):
        prepare(cifar_like(), augment="yes")
    assert not prepare(load_dataset("digits")).augment
