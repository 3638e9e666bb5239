"""`mn train` run folders: every run writes somewhere, a folder holding a run is only reused on purpose, the
configuration is a file (config.json, --config, --dry-run), and --resume continues the run that is there,
refusing model or data changes and applying (and announcing) optimiser and schedule changes."""
import json
import re

import pytest

from mn.cli import main
from mn.training import load_checkpoint
from mn.training.config import TrainConfig
from mn.training.rundir import default_out_dir

from helpers import assert_same_state

QUICK = ["--dataset", "spirals", "--epochs", "2", "--max-steps-per-epoch", "2", "--no-progress"]
REQUIRED = {"dataset", "method", "backbone", "lr", "weight_decay", "epochs", "batch_size", "num_entries", "gamma",
            "inner_steps", "inner_lr", "entry_dropout", "aux_weight", "seeds"}


def _records(path):
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in path.read_text().splitlines()]


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith("mn train: error: ") and all(n in err for n in needles), err
    return err


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_without_out_dir_a_new_run_folder_is_made_and_named_first(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *QUICK]) == 0
    err = capsys.readouterr().err.splitlines()
    (folder,) = (tmp_path / "runs").iterdir()
    assert re.fullmatch(r"spirals-mn-\d{8}-\d{6}", folder.name)
    assert err[0].startswith(f"mn train: run folder runs/{folder.name} ")
    assert {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} == \
        {"config.json", "seed0/metrics.jsonl", "seed0/last.pt", "seed0/best.pt"}


def test_default_folder_names_never_collide(tmp_path):
    cfg = TrainConfig(dataset="csv:/data/my table.csv", method="vanilla")
    first = default_out_dir(cfg, root=tmp_path, when=0)
    assert re.fullmatch(r"csv-my_table-vanilla-\d{8}-\d{6}", first.name)
    first.mkdir()
    assert default_out_dir(cfg, root=tmp_path, when=0).name == first.name + "-2"


def test_a_folder_holding_a_run_is_refused_unless_resume_or_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *QUICK, "--out-dir", str(out)]) == 0
    capsys.readouterr()
    before = _snapshot(out)
    assert main(["train", *QUICK, "--out-dir", str(out)]) == 2
    _one_line_error(capsys, f"{out} already holds a run (config.json, seed0/", "--resume", "--overwrite")
    assert _snapshot(out) == before, "a refused run touches nothing"

    (out / "notes.txt").write_text("mine")
    assert main(["train", *QUICK, "--seeds", "1", "--out-dir", str(out), "--overwrite"]) == 0
    assert "--overwrite: deleted the 4 run files" in capsys.readouterr().err
    assert not (out / "seed0").exists() and (out / "notes.txt").read_text() == "mine"
    assert [r["epoch"] for r in _records(out / "seed1" / "metrics.jsonl") if r["event"] == "epoch"] == [1, 2]
    assert json.loads((out / "config.json").read_text())["seeds"] == [1]


def test_resume_on_a_folder_without_a_run_says_so(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["train", "--out-dir", str(empty), "--resume"]) == 2
    _one_line_error(capsys, f"--resume: {empty} holds no run to resume")
    assert main(["train", "--out-dir", str(tmp_path / "missing"), "--resume"]) == 2
    _one_line_error(capsys, "holds no run to resume")
    assert not (tmp_path / "missing").exists() and list(empty.iterdir()) == []
    assert main(["train", "--resume"]) == 2
    _one_line_error(capsys, "--resume needs --out-dir")
    assert main(["train", "--out-dir", str(empty), "--resume", "--overwrite"]) == 2
    _one_line_error(capsys, "pass one of them")


def test_resume_refuses_model_or_data_changes_and_lists_them(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *QUICK, "--out-dir", str(out)]) == 0
    capsys.readouterr()
    before = _snapshot(out)
    assert main(["train", "--out-dir", str(out), "--resume", "--epochs", "3", "--gamma", "3", "--num-entries", "8",
                 "--val-fraction", "0.2"]) == 2
    err = _one_line_error(capsys, "would change its model or data", "num_entries (64 -> 8)", "gamma (10.0 -> 3.0)",
                          "val_fraction (0.1 -> 0.2)", str(out / "config.json"))
    assert "epochs" not in err
    assert main(["train", "--out-dir", str(out), "--resume", "--dataset", "digits"]) == 2
    _one_line_error(capsys, "dataset ('spirals' -> 'digits')")
    assert _snapshot(out) == before


def test_resume_continues_the_run_that_is_there_exactly(tmp_path, capsys):
    """--resume takes the run's own settings (config.json), not mn's defaults; a plain resume is bit-exact."""
    flags = ["--dataset", "spirals", "--method", "mn", "--num-entries", "16", "--entry-dropout", "0.5",
             "--max-steps-per-epoch", "3", "--lr-milestones", "2", "--no-progress"]
    assert main(["train", *flags, "--epochs", "3", "--out-dir", str(tmp_path / "straight")]) == 0
    assert main(["train", *flags, "--epochs", "1", "--out-dir", str(tmp_path / "split")]) == 0
    capsys.readouterr()
    assert main(["train", "--out-dir", str(tmp_path / "split"), "--resume", "--epochs", "3", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert f"resuming the run in {tmp_path / 'split'}" in err and "epochs (1 -> 3)" in err
    assert _records(tmp_path / "split" / "seed0" / "metrics.jsonl") == \
        _records(tmp_path / "straight" / "seed0" / "metrics.jsonl")
    _, a = load_checkpoint(tmp_path / "straight" / "seed0" / "last.pt")
    _, b = load_checkpoint(tmp_path / "split" / "seed0" / "last.pt")
    for key in ("model", "optimizer", "scheduler", "best_model"):
        assert_same_state(a[key], b[key], key)


def test_resume_with_a_new_learning_rate_applies_it_and_says_so(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *QUICK, "--out-dir", str(out)]) == 0          # spirals: lr 1e-2, no milestones
    capsys.readouterr()
    assert main(["train", "--out-dir", str(out), "--resume", "--epochs", "4", "--lr", "0.05", "--lr-milestones", "3",
                 "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "changed settings, applied from the next epoch:" in err
    assert "lr (0.01 -> 0.05)" in err and "lr_milestones ([] -> [3])" in err and "epochs (2 -> 4)" in err
    lrs = [r["lr"] for r in _records(out / "seed0" / "metrics.jsonl") if r["event"] == "epoch"]
    assert lrs == pytest.approx([0.01, 0.01, 0.05, 0.005]), "the new rate from epoch 3, decayed after milestone 3"
    _, state = load_checkpoint(out / "seed0" / "last.pt")
    assert all(g["lr"] == pytest.approx(0.005) for g in state["optimizer"]["param_groups"])
    assert json.loads((out / "config.json").read_text())["lr"] == 0.05


def test_config_json_is_written_at_the_start_and_config_takes_it_back(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert main(["train", *QUICK, "--seeds", "3", "--gamma", "7", "--out-dir", str(out)]) == 0
    written = json.loads((out / "config.json").read_text())
    assert REQUIRED <= set(written) and "out_dir" not in written and "resume" not in written
    assert (written["dataset"], written["gamma"], written["seeds"], written["epochs"], written["backbone"]) == \
        ("spirals", 7.0, [3], 2, "linear")
    capsys.readouterr()
    assert main(["train", "--config", str(out / "config.json"), "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out) == written
    assert main(["train", "--config", str(out / "config.json"), "--out-dir", str(tmp_path / "again")]) == 0
    assert json.loads((tmp_path / "again" / "config.json").read_text()) == written
    assert _records(tmp_path / "again" / "seed3" / "metrics.jsonl") == _records(out / "seed3" / "metrics.jsonl")

    # at the start: a run that dies in its first epoch has written it already
    from mn.training import loop

    def die(self):
        raise KeyboardInterrupt
    monkeypatch.setattr(loop.Run, "train_epoch", die)
    with pytest.raises(KeyboardInterrupt):
        main(["train", *QUICK, "--out-dir", str(tmp_path / "died")])
    assert json.loads((tmp_path / "died" / "config.json").read_text())["dataset"] == "spirals"


def test_dry_run_prints_the_configuration_and_reads_no_data(tmp_path, monkeypatch, capsys):
    import mn.data
    import mn.training.run

    def no_reading(*args, **kwargs):
        raise AssertionError("--dry-run read data")
    monkeypatch.setattr(mn.data, "load_dataset", no_reading)
    monkeypatch.setattr(mn.training.run, "load_dataset", no_reading)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--dataset", "cifar100", "--data-dir", str(tmp_path / "none"), "--lr", "0.01",
                 "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    config = json.loads(out)
    assert REQUIRED <= set(config)
    assert (config["dataset"], config["lr"], config["backbone"], config["epochs"], config["num_entries"],
            config["weight_decay"], config["seeds"]) == ("cifar100", 0.01, "resnet29", 400, 10000, 0.075, [0])
    assert list(tmp_path.iterdir()) == [], "nothing written"
    assert main(["train", "--dataset", "digits", "--entry-dropout", "2", "--dry-run"]) == 2
    assert "entry_dropout must be" in capsys.readouterr().err


def test_resume_with_a_new_weight_decay_applies_it_to_the_decayed_group(tmp_path, capsys):
    out = tmp_path / "run"
    quick = ["--dataset", "diabetes", "--method", "mn", "--num-entries", "8", "--fold", "0", "--max-steps-per-epoch",
             "1", "--no-progress"]
    assert main(["train", *quick, "--epochs", "1", "--out-dir", str(out)]) == 0
    assert main(["train", "--out-dir", str(out), "--resume", "--epochs", "2", "--weight-decay", "0.01"]) == 0
    assert "weight_decay (0.075 -> 0.01)" in capsys.readouterr().err
    _, state = load_checkpoint(out / "seed0" / "fold0" / "last.pt")
    assert [g["weight_decay"] for g in state["optimizer"]["param_groups"]] == [0.01, 0.0]
