"""The training recipe: each default pinned to its source (the paper's §Implementation details, or the authors'
TensorFlow code, lupalab/Meta-Neighborhoods, where the paper is silent), and the optimiser's updates checked
against literal forms of the authors' updates (docs/design.md, "Training recipe")."""
import json

import pytest
import torch
from torch import nn

import mn
from mn import plot
from mn.data import load_dataset, prepare
from mn.training import make_config
from mn.training.config import ADAMW_WEIGHT_DECAY, SGD_WEIGHT_DECAY
from mn.training.methods import build_model
from mn.training.optim import build_optimizer, build_scheduler

PAPER_WD, PAPER_LR = 7.5e-5, 1e-3            # "AdamW with weight decay rate 7.5e-5, an initial learning rate of 1e-3"
IMAGE_SETS = ("cifar10", "cifar100", "cinic10", "tiny_imagenet")


@pytest.mark.parametrize("dataset, epochs, milestone, entries", [
    ("cifar10", 400, 300, 5000), ("cifar100", 400, 300, 10000),        # paper: 400 epochs, drop at 300
    ("cinic10", 350, 250, 5000), ("tiny_imagenet", 350, 250, 10000)])  # 350, drop at 250; S 5000 / 10000
def test_image_defaults_are_the_papers_and_the_authors(dataset, epochs, milestone, entries):
    cfg = make_config(flags=dict(dataset=dataset))
    assert (cfg.optimizer, cfg.lr, cfg.batch_size, cfg.gamma, cfg.aux_weight) == ("adamw", PAPER_LR, 128, 5.0, 1.0)
    assert (cfg.epochs, cfg.lr_milestones, cfg.lr_decay, cfg.num_entries) == (epochs, [milestone], 0.1, entries)
    assert cfg.weight_decay == pytest.approx(PAPER_WD / PAPER_LR) == ADAMW_WEIGHT_DECAY
    # authors' code: dropout_ratio 0.5 (main.py); keys N(0, 0.05), values softmax(10 * raw), raw ~ N(0, 0.01)
    # (maml.py construct_memory); crop, flip, AutoAugment, Cutout (data_generator.py); clip +-10 (maml.py)
    assert (cfg.entry_dropout, cfg.key_init_std, cfg.value_scale, cfg.value_init_std) == (0.5, 0.05, 10.0, 0.01)
    assert cfg.augment is True and cfg.grad_clip == 10.0 and cfg.inner_lr_init == 0.05


def test_regression_defaults_are_the_papers():
    """§Regression: an MLP of 3 x 128, lr 1e-3, batch 128, stop after 10 epochs without a lower validation loss,
    keys N(0, 0.1), 1000 entries, gamma 10, cosine attention for the real-world sets (Eq. 12)."""
    for dataset in ("music", "toms", "cte", "super", "gom", "csv:any.csv"):
        cfg = make_config(flags=dict(dataset=dataset))
        assert (cfg.backbone, cfg.lr, cfg.batch_size, cfg.patience, cfg.num_entries, cfg.gamma) == \
            ("mlp", 1e-3, 128, 10, 1000, 10.0)
        assert (cfg.similarity, cfg.key_init_std, cfg.entry_dropout, cfg.augment) == ("cosine", 0.1, 0.0, False)
    assert make_config(flags=dict(dataset="spirals")).similarity == "euclidean"        # the toy: Eq. 11


def test_sgd_baselines_take_the_authors_l2_and_nesterov():
    cfg = make_config(flags=dict(dataset="cifar10", method="vanilla", optimizer="sgd"))
    assert (cfg.lr, cfg.weight_decay, cfg.momentum) == (0.1, SGD_WEIGHT_DECAY, 0.9) and SGD_WEIGHT_DECAY == 2e-4
    assert make_config(flags=dict(optimizer="sgd", weight_decay=1e-3)).weight_decay == 1e-3


def test_dry_run_prints_the_recipe(capsys):
    from mn.cli import main
    main(["train", "--dataset", "cifar100", "--dry-run"])
    shown = json.loads(capsys.readouterr().out)
    assert {k: shown[k] for k in ("weight_decay", "entry_dropout", "key_init_std", "value_scale", "value_init_std",
                                  "augment", "backbone")} == \
        dict(weight_decay=0.075, entry_dropout=0.5, key_init_std=0.05, value_scale=10.0, value_init_std=0.01,
             augment=True, backbone="resnet29")


def _digits_model(**flags):
    cfg = make_config(flags=dict(dataset="digits", num_entries=10, **flags))
    torch.manual_seed(0)
    return cfg, build_model(cfg, prepare(load_dataset("digits"))).double()


def test_adamw_equals_the_authors_decoupled_update_across_the_lr_drop():
    """The authors' step (tf.contrib.opt.AdamWOptimizer): w <- w - wd_t * w - lr_t * adam(g), with wd_t and lr_t
    both scaled by 0.1 at the drop (main.py). torch's AdamW at weight_decay 0.075 takes the same steps. (adam(g)
    is written here as torch computes it; TF places Adam's epsilon after the bias correction, a difference of
    order eps / sqrt(v) that is not the weight decay's.)"""
    cfg, model = _digits_model(method="vanilla", lr_milestones=[2])
    opt = build_optimizer(cfg, model)
    sched = build_scheduler(cfg, opt)
    conv = model.net[0].convs[0].weight                         # a decayed backbone weight
    w = conv.detach().clone()
    m, v = torch.zeros_like(w), torch.zeros_like(w)
    g = torch.Generator().manual_seed(1)
    for epoch in range(4):
        lr_t, wd_t = (PAPER_LR, PAPER_WD) if epoch < 2 else (0.1 * PAPER_LR, 0.1 * PAPER_WD)
        grad = torch.randn(w.shape, generator=g, dtype=w.dtype)
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        conv.grad = grad.clone()
        opt.step()
        sched.step()
        t = epoch + 1
        m, v = 0.9 * m + 0.1 * grad, 0.999 * v + 0.001 * grad ** 2
        step = lr_t * (m / (1 - 0.9 ** t)) / ((v / (1 - 0.999 ** t)).sqrt() + 1e-8)
        w = w - wd_t * w - step
        torch.testing.assert_close(conv.detach(), w, rtol=1e-12, atol=1e-15)


def test_sgd_equals_nesterov_with_the_l2_loss_on_conv_kernels():
    """The authors' SGD baseline: Nesterov momentum 0.9 on the loss plus 2e-4 * sum(w^2) / 2 over the conv
    kernels (tf l2_regularizer); batch-norm parameters and the output layer carry no L2 term."""
    cfg, model = _digits_model(method="vanilla", classifier="dot", optimizer="sgd", backbone="resnet29")
    opt = build_optimizer(cfg, model)
    decayed = {id(p) for p in opt.param_groups[0]["params"]}
    convs = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert decayed == {id(p) for p in convs}
    norms = [p for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()]
    assert norms and not any(id(p) in decayed for p in norms)
    model.eval()                                  # batch statistics of 4 examples would make BN the noise here
    x, y = torch.randn(4, 1, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 2, 3])
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    buffers = {}
    for _ in range(2):
        loss = model(x, y)[1].mean()
        opt.zero_grad()
        loss.backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters()}
        opt.step()
        for name, p in model.named_parameters():
            g = grads[name] + (SGD_WEIGHT_DECAY * before[name] if id(p) in decayed else 0)
            buffers[name] = g if name not in buffers else 0.9 * buffers[name] + g
            before[name] = before[name] - 0.1 * (g + 0.9 * buffers[name])
            torch.testing.assert_close(p.detach(), before[name], rtol=1e-12, atol=1e-14)


def test_adamw_decays_the_backbone_with_its_batch_norm_not_the_head():
    """The authors' AdamW decays every variable outside the 'memory' scope: conv and batch-norm parameters."""
    cfg, model = _digits_model(method="mn", backbone="resnet29")
    decayed = {id(p) for p in build_optimizer(cfg, model).param_groups[0]["params"]}
    assert decayed == {id(p) for p in model.classifier.backbone.parameters()}
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.classifier.backbone.modules())


def test_training_builds_the_head_from_the_recipe():
    cfg, model = _digits_model(method="mn", value_scale=4.0, key_init_std=0.2, entry_dropout=0.25)
    head = model.classifier.head
    assert (head.value_scale, head.entry_dropout) == (4.0, 0.25)
    torch.testing.assert_close(head.values, torch.softmax(4.0 * head.value_logits, 1))
    assert 0.15 < head.keys.std().item() < 0.25


def test_values_move_value_scale_times_faster_under_adam():
    """Why the scale matters: Adam's step on the raw logits is about lr whatever their gradient's size, so the
    logits of softmax(10 * raw) move 10x as far per step as those of softmax(raw)."""
    moved = {}
    for scale in (1.0, 10.0):
        torch.manual_seed(0)
        head = mn.MetaNeighborhoodsHead(8, 3, num_entries=16, value_scale=scale)
        before = (scale * head.value_logits).detach().clone()
        opt = torch.optim.Adam([head.value_logits], lr=1e-3)
        z, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
        nn.functional.cross_entropy(head(z), y).backward()
        opt.step()
        moved[scale] = ((scale * head.value_logits).detach() - before).abs().mean().item()
    assert moved[10.0] / moved[1.0] == pytest.approx(10.0, rel=0.05)


@pytest.mark.parametrize("name", IMAGE_SETS)
def test_every_natural_image_set_augments_by_default(name):
    assert make_config(flags=dict(dataset=name)).augment is True
    assert make_config(flags=dict(dataset=name, augment=False)).augment is False
    assert make_config(flags=dict(dataset="digits")).augment is False


def test_weight_decay_grid_keeps_the_value_with_the_best_validation_result(tmp_path):
    """§Regression: "the best weight decay rate is chosen for each dataset" -- on validation, per (seed, fold)."""
    from mn.training import train
    from mn.training.console import Console
    from mn.training.rundir import clear_run, run_files

    cfg = make_config(flags=dict(dataset="diabetes", method="vanilla", epochs=2, max_steps_per_epoch=2, fold=0,
                                 weight_decay_grid=[0.0, 30.0], out_dir=str(tmp_path), progress=False))
    result = train(cfg, log=lambda line: None, console=Console(lambda text: None, bars=False))
    (run,) = result["runs"]
    grid = {g["weight_decay"]: g["val_mse"] for g in run["grid"]}
    assert set(grid) == {0.0, 30.0} and grid[0.0] != grid[30.0]
    assert run["weight_decay"] == min(grid, key=grid.get) and run["val_mse"] == grid[run["weight_decay"]]
    for wd in grid:
        folder = tmp_path / "seed0" / "fold0" / f"wd{wd:g}"
        records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        assert (folder / "best.pt").is_file() and records[-1]["event"] == "result"
        assert records[-1]["val_mse"] == grid[wd]
        if wd == run["weight_decay"]:
            assert records[-1]["test_mse"] == run["test_mse"]
    assert len(run_files(tmp_path)) == 1 + 2 * 3
    # mn plot draws the value mn train kept
    chosen = tmp_path / "seed0" / "fold0" / f"wd{run['weight_decay']:g}" / "metrics.jsonl"
    assert plot.metrics_files(tmp_path) == [chosen]
    clear_run(tmp_path)
    assert run_files(tmp_path) == [] and not (tmp_path / "seed0").exists()


@pytest.mark.parametrize("flags, message", [
    (dict(weight_decay_grid=[]), "weight_decay_grid must be null or a non-empty list"),
    (dict(weight_decay_grid=[-1.0]), "weight_decay_grid must be null or a non-empty list"),
    (dict(weight_decay_grid=[0.0, 0]), "weight_decay_grid must be null or a non-empty list of distinct"),
    (dict(augment="yes"), "augment must be true, false or null"),
    (dict(value_scale=0), "value_scale must be a number > 0"),
    (dict(key_init_std=-0.1), "key_init_std must be a number > 0")])
def test_bad_recipe_settings_name_their_key(flags, message):
    from mn.training import ConfigError
    with pytest.raises(ConfigError, match=message):
        make_config(flags=flags)


def test_a_checkpoint_of_an_earlier_mn_is_read_with_the_value_form_it_was_trained_with(tmp_path):
    """Runs before the value scale stored no value_scale; their values were softmax(raw). Such a checkpoint must
    predict as it did, not with softmax(10 * raw)."""
    from mn.training import train
    from mn.training.checkpoint import load_checkpoint, save_checkpoint
    from mn.training.console import Console
    from mn.training.run import evaluate_checkpoint, load_trained

    cfg = make_config(flags=dict(dataset="digits", method="mn", num_entries=10, epochs=1, max_steps_per_epoch=2,
                                 out_dir=str(tmp_path), progress=False))
    train(cfg, log=lambda line: None, console=Console(lambda text: None, bars=False))
    config, state = load_checkpoint(tmp_path / "seed0" / "best.pt")
    old_config = {k: v for k, v in config.items() if k not in ("value_scale", "value_init_std", "key_init_std")}
    old_state = dict(state, model={k: (10 * v if k.endswith("value_logits") else v) for k, v in state["model"].items()})
    save_checkpoint(tmp_path / "old.pt", config=old_config, state=old_state)
    _, _, model, _ = load_trained(tmp_path / "old.pt")
    assert model.classifier.head.value_scale == 1.0
    new, old = evaluate_checkpoint(tmp_path / "seed0" / "best.pt"), evaluate_checkpoint(tmp_path / "old.pt")
    assert old["loss"] == pytest.approx(new["loss"], rel=1e-5) and old["accuracy"] == new["accuracy"]


def test_a_grid_without_a_validation_split_is_refused_before_anything_is_written(tmp_path):
    from mn.training import ConfigError, train
    cfg = make_config(flags=dict(dataset="diabetes", method="vanilla", fold=0, val_fraction=0.0, epochs=1,
                                 weight_decay_grid=[0.0, 0.1], out_dir=str(tmp_path / "run"), progress=False))
    with pytest.raises(ConfigError, match="weight_decay_grid chooses on the validation split"):
        train(cfg, log=lambda line: None)
    assert not (tmp_path / "run").exists()


def test_the_grid_never_keeps_a_diverged_run():
    from mn.training.rundir import grid_choice
    nan = float("nan")
    assert grid_choice([(30.0, {"val_mse": nan}), (0.0, {"val_mse": 0.9}), (1.0, {"val_mse": 0.9})])[0] == 0.0
    assert grid_choice([(30.0, {"val_accuracy": nan}), (0.0, {"val_accuracy": 0.5})])[0] == 0.0
    assert grid_choice([(1.0, {"val_accuracy": 0.7}), (2.0, {"val_accuracy": 0.8})])[0] == 2.0


@pytest.mark.parametrize("backbone", ["resnet29", "densenet40bc"])
def test_an_earlier_mns_resnet_or_densenet_checkpoint_is_refused_by_name(tmp_path, backbone):
    """Their layers changed to the authors' layouts: an earlier mn's weights for them cannot be read, and the
    error says so instead of blaming the configuration."""
    from mn.training import ConfigError
    from mn.training.checkpoint import save_checkpoint
    from mn.training.run import load_trained
    config = {k: v for k, v in vars(make_config(flags=dict(dataset="cifar10", backbone=backbone))).items()
              if k not in ("value_scale", "value_init_std", "key_init_std")}
    save_checkpoint(tmp_path / "old.pt", config=config, state={"model": {}, "seed": 0, "fold": -1, "epoch": 1})
    with pytest.raises(ConfigError, match=f"written by an earlier mn, whose {backbone} had other widths"):
        load_trained(tmp_path / "old.pt")


def test_an_earlier_mns_sgd_run_is_not_resumed(tmp_path):
    from mn.training import ConfigError
    from mn.training.rundir import check_resume
    cfg = make_config(flags=dict(dataset="digits", method="vanilla", optimizer="sgd"))
    stored = {k: v for k, v in vars(cfg).items() if k not in ("value_scale", "value_init_std", "key_init_std")}
    with pytest.raises(ConfigError, match="trained with SGD by an earlier mn, .* cannot be resumed"):
        check_resume(stored, cfg, tmp_path / "config.json")
