"""Checkpoints: resume continues exactly as the uninterrupted run; `mn eval` reproduces the saved model's
metrics; missing, corrupt and foreign files raise a clear error naming the file."""
import pytest
import torch

from mn.training import CheckpointError, evaluate_checkpoint, load_checkpoint, make_config, train
from mn.training.distributed import Context

from helpers import assert_same_state

CPU = Context(0, 1, torch.device("cpu"))
# Entry dropout and several steps per epoch exercise every random stream that resume must replay.
FLAGS = dict(dataset="digits", method="mn", num_entries=40, entry_dropout=0.5, max_steps_per_epoch=3,
             lr_milestones=[1], progress=False)


def _run(out_dir, epochs, resume=False):
    cfg = make_config(flags=dict(FLAGS, epochs=epochs, out_dir=str(out_dir), resume=resume))
    return train(cfg, CPU, log=lambda line: None)["runs"][0]


def test_resume_gives_identical_continuation(tmp_path):
    straight = _run(tmp_path / "straight", epochs=3)
    _run(tmp_path / "split", epochs=1)
    resumed = _run(tmp_path / "split", epochs=3, resume=True)
    _, a = load_checkpoint(tmp_path / "straight" / "seed0" / "last.pt")
    _, b = load_checkpoint(tmp_path / "split" / "seed0" / "last.pt")
    assert a["epoch"] == b["epoch"] == 3
    for key in ("model", "optimizer", "scheduler", "best_model"):
        assert_same_state(a[key], b[key], key)
    assert a["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-4), "step decay at the milestone"
    assert straight["test_accuracy"] == resumed["test_accuracy"]
    lines = (tmp_path / "split" / "seed0" / "metrics.jsonl").read_text().splitlines()
    assert sum('"event": "epoch"' in line for line in lines) == 3


def test_eval_reproduces_the_best_model_metrics(tmp_path):
    result = _run(tmp_path, epochs=2)
    evaluated = evaluate_checkpoint(tmp_path / "seed0" / "best.pt")
    assert evaluated["epoch"] == result["best_epoch"]
    assert evaluated["accuracy"] == pytest.approx(result["test_accuracy"])
    assert evaluate_checkpoint(tmp_path / "seed0" / "best.pt", split="val")["accuracy"] == pytest.approx(
        result["val_accuracy"])


def test_bad_checkpoint_files_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found: .*nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00\x01 not a torch file")
    with pytest.raises(CheckpointError, match="garbage.pt is not a readable mn checkpoint"):
        load_checkpoint(garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    with pytest.raises(CheckpointError, match="foreign.pt is not an mn checkpoint"):
        load_checkpoint(foreign)
    truncated = tmp_path / "truncated.pt"
    _run(tmp_path / "run", epochs=1)
    truncated.write_bytes((tmp_path / "run" / "seed0" / "last.pt").read_bytes()[:2000])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        evaluate_checkpoint(truncated)


def _rewrite(source, target, change):
    """A copy of checkpoint `source` at `target` with change(blob) applied to its raw content."""
    blob = torch.load(source, weights_only=True)
    change(blob)
    torch.save(blob, target)
    return target


def _poison(blob, key="model"):
    name = next(iter(blob[key]))
    blob[key] = dict(blob[key], **{name: torch.full_like(blob[key][name], float("nan"))})


def test_checkpoints_without_weights_or_with_nan_weights_are_named(tmp_path):
    from mn.cli import main

    _run(tmp_path / "run", epochs=1)
    best = tmp_path / "run" / "seed0" / "best.pt"
    no_model = _rewrite(best, tmp_path / "no_model.pt", lambda blob: blob.pop("model"))
    with pytest.raises(CheckpointError, match="no_model.pt has no 'model' entry"):
        evaluate_checkpoint(no_model)
    nan = _rewrite(best, tmp_path / "nan.pt", _poison)
    with pytest.raises(CheckpointError, match=r"nan.pt: the weights in 'model' hold NaN or Inf \(.+\); the run "
                                              "diverged or the file is damaged"):
        evaluate_checkpoint(nan)
    assert main(["eval", str(nan)]) == 2


@pytest.mark.parametrize("damage", ["no model", "nan model", "nan best model"])
def test_resume_from_a_damaged_last_checkpoint_says_so(tmp_path, damage):
    _run(tmp_path, epochs=1)
    last = tmp_path / "seed0" / "last.pt"
    change = {"no model": lambda blob: blob.pop("model"), "nan model": _poison,
              "nan best model": lambda blob: _poison(blob, "best_model")}[damage]
    _rewrite(last, last, change)
    expected = {"no model": "last.pt has no 'model' entry", "nan model": "last.pt: the weights in 'model' hold NaN",
                "nan best model": "last.pt: the weights in 'best_model' hold NaN"}[damage]
    with pytest.raises(CheckpointError, match=expected):
        _run(tmp_path, epochs=2, resume=True)
