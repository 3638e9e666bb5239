"""Configuration: data-set defaults (the paper's settings), files, flags over files, and clear errors."""
import json

import pytest

from mn.training import ConfigError, make_config, read_config_file


def test_paper_defaults():
    cfg = make_config(flags=dict(dataset="cifar100"))
    assert (cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.batch_size, cfg.grad_clip) == \
        ("adamw", 1e-3, 0.075, 128, 10.0)
    assert (cfg.epochs, cfg.lr_milestones, cfg.num_entries, cfg.gamma, cfg.aux_weight) == (400, [300], 10000, 5.0, 1.0)
    reg = make_config(flags=dict(dataset="music"))
    assert (reg.backbone, reg.num_entries, reg.gamma, reg.patience, reg.folds) == ("mlp", 1000, 10.0, 10, 5)
    assert make_config(flags=dict(optimizer="sgd")).lr == 0.1
    assert make_config(flags=dict(optimizer="sgd", lr=0.05)).lr == 0.05


def test_flags_override_file_override_defaults(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"dataset": "digits", "epochs": 7, "num_entries": 33}))
    cfg = make_config(read_config_file(path), {"epochs": 2})
    assert (cfg.epochs, cfg.num_entries, cfg.backbone) == (2, 33, "digits_cnn")
    toml = tmp_path / "c.toml"
    toml.write_text('dataset = "spirals"\nseeds = [1, 2]\n')
    assert make_config(read_config_file(toml)).seeds == [1, 2]


@pytest.mark.parametrize("flags, message", [
    ({"epochz": 3}, "unknown setting.*epochz"),
    ({"method": "knn"}, "method must be one of"),
    ({"lr": -1.0}, "lr must be a number > 0"),
    ({"entry_dropout": 1.0}, r"entry_dropout must be a number in \[0, 1\)"),
    ({"seeds": []}, "seeds must be a non-empty list"),
    ({"dataset": "imagenet"}, "dataset must be one of"),
    ({"fold": 7}, r"fold must be null or an integer in \[0, 5\)"),
    ({"resume": True}, "resume must be used with out_dir"),
    ({"epochs": 2.5}, "epochs must be a positive integer"),
])
def test_bad_settings_name_their_key(flags, message):
    with pytest.raises(ConfigError, match=message):
        make_config(flags=flags)


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="config file not found"):
        read_config_file(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{epochs: 3")
    with pytest.raises(ConfigError, match="bad.json is not valid JSON"):
        read_config_file(bad)
    other = tmp_path / "c.yaml"
    other.write_text("epochs: 3")
    with pytest.raises(ConfigError, match="must end in .json or .toml"):
        read_config_file(other)
    listing = tmp_path / "list.json"
    listing.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="table of settings"):
        read_config_file(listing)
