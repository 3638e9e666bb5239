"""A run killed at any moment resumes to the same files as a run never killed: last.pt, best.pt and
metrics.jsonl agree with each other and with the uninterrupted run, and a finished run resumed again logs no
second result.

The kill: every file write of a run ends in os.fsync (the data is on disk) and every file swap is an os.replace;
the test makes the N-th of those calls die right after it returns, for every N the run makes, then resumes."""
import json
import os

import pytest
import torch

from mn.training import load_checkpoint, make_config, train
from mn.training.distributed import Context

from helpers import assert_same_state

CPU = Context(0, 1, torch.device("cpu"))
# Best validation epochs of this run: 1, 2, 2, 4, 4 -- the best model changes, and the last epoch is not the
# best, so a best.pt left behind by a kill stays wrong unless the resume mends it. Entry dropout and the
# milestone exercise the random streams and the schedule a resume must replay.
FLAGS = dict(dataset="spirals", method="mn", epochs=5, max_steps_per_epoch=5, lr_milestones=[2], entry_dropout=0.5,
             lr=0.05, progress=False)


class Died(BaseException):
    """The process is gone: nothing after the kill point runs (no except Exception handler catches it)."""


def _run(out_dir, resume=False):
    cfg = make_config(flags=dict(FLAGS, out_dir=str(out_dir), resume=resume))
    return train(cfg, CPU, log=lambda line: None)["runs"][0]


def _kill_after(monkeypatch, n):
    """Counts os.fsync / os.replace calls; the n-th (n=None: none) raises Died right after it is done."""
    calls = [0]

    def wrap(real):
        def call(*args, **kwargs):
            out = real(*args, **kwargs)
            calls[0] += 1
            if calls[0] == n:
                raise Died(f"killed after write point {n}")
            return out
        return call

    monkeypatch.setattr(os, "fsync", wrap(os.fsync))
    monkeypatch.setattr(os, "replace", wrap(os.replace))
    return calls


def _files(run_dir):
    """(last.pt state, best.pt state, metrics records without the timings)."""
    _, last = load_checkpoint(run_dir / "last.pt")
    _, best = load_checkpoint(run_dir / "best.pt")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return last, best, [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def _assert_consistent(run_dir):
    """The three files tell one story: every epoch logged once, up to last.pt's; one result, at the end, whose
    best epoch is last.pt's and best.pt's; best.pt holds last.pt's best model."""
    last, best, records = _files(run_dir)
    epochs = [r["epoch"] for r in records if r["event"] == "epoch"]
    results = [r for r in records if r["event"] == "result"]
    assert epochs == list(range(1, last["epoch"] + 1))
    assert len(results) == 1 and records[-1] is results[0]
    assert results[0]["epochs"] == last["epoch"] and results[0]["best_epoch"] == last["best_epoch"] == best["epoch"]
    assert best["model"].keys() == last["best_model"].keys()
    assert all(torch.equal(best["model"][k], last["best_model"][k]) for k in best["model"])


def _assert_same_run(run_dir, reference_dir):
    (last, best, records), (ref_last, ref_best, ref_records) = _files(run_dir), _files(reference_dir)
    assert records == ref_records
    assert last["epoch"] == ref_last["epoch"] and best["epoch"] == ref_best["epoch"]
    assert_same_state(last["model"], ref_last["model"], "last.model")
    assert_same_state(best["model"], ref_best["model"], "best.model")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run: its directory, result, and how many write points it passes."""
    out = tmp_path_factory.mktemp("reference")
    with pytest.MonkeyPatch.context() as mp:
        calls = _kill_after(mp, None)
        result = _run(out)
    run_dir = out / "seed0"
    _, best, _ = _files(run_dir)
    assert 1 < best["epoch"] < FLAGS["epochs"], "this test needs a run whose best epoch is neither first nor last"
    _assert_consistent(run_dir)
    return run_dir, result, calls[0]


def test_a_run_killed_at_any_write_point_resumes_to_the_same_files(tmp_path, monkeypatch, reference):
    ref_dir, ref_result, points = reference
    assert points > FLAGS["epochs"]
    for n in range(1, points + 1):
        out = tmp_path / f"kill{n}"
        calls = _kill_after(monkeypatch, n)
        with pytest.raises(Died):
            _run(out)
        monkeypatch.undo()
        assert calls[0] == n
        result = _run(out, resume=True)
        assert result == ref_result, f"killed after write point {n}"
        _assert_consistent(out / "seed0")
        _assert_same_run(out / "seed0", ref_dir)


def test_resuming_a_finished_run_logs_no_second_result(tmp_path, reference):
    ref_dir, ref_result, _ = reference
    _run(tmp_path)
    again = _run(tmp_path, resume=True)
    assert again == ref_result
    _assert_consistent(tmp_path / "seed0")
    _assert_same_run(tmp_path / "seed0", ref_dir)


def test_a_fresh_run_replaces_an_old_runs_metrics(tmp_path, reference):
    ref_dir, _, _ = reference
    (tmp_path / "seed0").mkdir()
    (tmp_path / "seed0" / "metrics.jsonl").write_text('{"event": "epoch", "epoch": 7}\n')
    _run(tmp_path)
    _assert_same_run(tmp_path / "seed0", ref_dir)


def test_a_killed_fresh_run_does_not_inherit_an_older_runs_result(tmp_path, monkeypatch):
    """An older finished run (same seed, fold, epochs, other learning rate) in the folder; a fresh run killed
    right after its first last.pt, before its first metrics line: the resume logs the fresh run's result, not the
    older one's. (The command line refuses a fresh run into a folder holding one; train() itself does not.)"""
    flags = dict(FLAGS, epochs=1, lr_milestones=[])
    run = lambda out, **kw: train(make_config(flags=dict(flags, out_dir=str(out), **kw)), CPU,  # noqa: E731
                                  log=lambda line: None)["runs"][0]
    expected = run(tmp_path / "reference")
    run(tmp_path / "x", lr=0.5)                                  # the older run
    calls = _kill_after(monkeypatch, 5)      # config.json: fsync, rename, fsync of the folder; last.pt: fsync, rename
    with pytest.raises(Died):
        run(tmp_path / "x")
    monkeypatch.undo()
    assert calls[0] == 5
    assert load_checkpoint(tmp_path / "x" / "seed0" / "last.pt")[0]["lr"] != 0.5, "killed after the fresh last.pt"
    assert run(tmp_path / "x", resume=True) == expected
    _assert_consistent(tmp_path / "x" / "seed0")
    _assert_same_run(tmp_path / "x" / "seed0", tmp_path / "reference" / "seed0")
