"""bench/paper_claims.py (issue 16's Table 1 protocol): its statistics against hand-computed values, and a
two-step smoke run of every kind of row (vanilla, MAXL, MN, wide) that resumes without retraining."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "bench" / "paper_claims.py"
SPEC = importlib.util.spec_from_file_location("paper_claims", SCRIPT)
claims = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(claims)


def _run(method, seed, acc):
    return {"dataset": "digits", "method": method, "seed": seed, "test_accuracy": acc, "val_accuracy": acc,
            "best_epoch": 1, "epochs": 1, "wall_s": 1.0, "cpu_s": 1.0, "config": {}}


def test_summary_pairs_each_mn_row_with_the_best_vanilla_maxl_and_the_best_wide_net_by_seed():
    acc = {"vanilla dot-sgd": [0.90, 0.92, 0.94], "vanilla cos-adamw": [0.91, 0.90, 0.89],
           "MAXL": [0.93, 0.93, 0.90], "MN ft:1+S": [0.95, 0.94, 0.96],
           "wide dot-adamw": [0.92, 0.92, 0.92], "wide cos-adamw": [0.80, 0.99, 0.80]}
    record = {"runs": [_run(m, s, a[s]) for m, a in acc.items() for s in (2, 0, 1)]}   # any order of seeds
    s = claims.summarise(record)["digits"]
    assert (s["best_vanilla"], s["maxl"], s["best_wide"]) == ("vanilla dot-sgd", "MAXL", "wide dot-adamw")
    d = s["differences"]["MN ft:1+S"]
    # MN - vanilla dot-sgd: 0.05, 0.02, 0.02 -> mean 0.03, std sqrt(0.0003) = 0.017321,
    # half-width t(0.975, 2) = 4.302653 * 0.017321 / sqrt(3) = 0.043027
    assert d["best_vanilla"]["values"] == pytest.approx([0.05, 0.02, 0.02])
    assert d["best_vanilla"]["ci95"] == pytest.approx([0.03 - 0.043027, 0.03 + 0.043027], abs=1e-6)
    # MN - MAXL: 0.02, 0.01, 0.06 -> mean 0.03, std sqrt(0.0007) = 0.026458, half-width 0.065724
    assert d["maxl"]["against"] == "MAXL"
    assert d["maxl"]["ci95"] == pytest.approx([0.03 - 0.065724, 0.03 + 0.065724], abs=1e-6)
    assert d["best_wide"]["mean"] == pytest.approx(0.03)
    record.update(overrides={}, parameters={}, test_examples={"digits": 360}, invocations=[{
        "command": "bench/paper_claims.py", "commit": "abc", "load_average_start": [1, 1, 1],
        "load_average_end": [1, 1, 1], "wall_s": 60.0, "runs": 18, "environment": {
            "date": "d", "cpu": "c", "cores": 2, "python": "p", "torch": "t", "numpy": "n", "scikit-learn": "s",
            "mlxtend": None}}])
    table = claims.markdown(record, claims.summarise(record))
    assert "360 test examples: one is 0.28 points" in table
    assert "| vanilla dot-sgd (best vanilla) | 92.00 ± 2.00 | 90.00, 92.00, 94.00 |" in table
    assert "| MN ft:1+S | +3.00 [-1.30, +7.30] vs vanilla dot-sgd, n = 3 | +3.00 [-3.57, +9.57] vs MAXL, n = 3 |" \
        in table


def test_best_rows_are_chosen_on_shared_seeds_and_one_seed_gives_no_interval():
    # vanilla dot-sgd has the higher mean over its own seeds (0.99 on seed 1 alone), cos-sgd on the shared seed 0
    record = {"runs": [_run("vanilla dot-sgd", 1, 0.99), _run("vanilla dot-sgd", 0, 0.80),
                       _run("vanilla cos-sgd", 0, 0.85), _run("MN ft:1+S", 0, 0.90)]}
    s = claims.summarise(record)["digits"]
    assert s["best_vanilla"] == "vanilla cos-sgd"
    d = s["differences"]["MN ft:1+S"]["best_vanilla"]
    assert d["n"] == 1 and d["mean"] == pytest.approx(0.05)
    assert claims._interval(d) == "+5.00, no interval (n = 1) vs vanilla cos-sgd"


def test_rows_of_a_group_without_a_shared_seed_are_refused_by_name():
    record = {"runs": [_run("vanilla dot-sgd", 0, 0.9), _run("vanilla cos-sgd", 1, 0.9)]}
    with pytest.raises(SystemExit, match="vanilla dot-sgd, vanilla cos-sgd share no seed"):
        claims.summarise(record)


def test_an_interrupted_record_of_the_first_format_loads(tmp_path):
    env = {"date": "d", "cpu": "c", "cores": 2, "python": "p", "torch": "t", "numpy": "n", "scikit-learn": "s",
           "mlxtend": None}
    path = tmp_path / "old.json"            # written before invocations; cut short: no end load, no total time
    path.write_text(json.dumps({"runs": [_run("MAXL", 0, 0.9)], "overrides": {}, "environment": env,
                                "command": "bench/paper_claims.py", "load_average_start": [1, 1, 1]}))
    record = claims.load(path)
    assert record["invocations"][0]["wall_s"] is None and "command" not in record
    assert "run cut short" in claims._invocation(1, record["invocations"][0])


def _square_or_fail(x):
    if x == 1:
        raise ValueError("run 1 fails")
    return x * x


def test_a_failed_run_starts_nothing_more_and_keeps_what_finished():
    kept = []
    with pytest.raises(ValueError, match="run 1 fails"):
        claims.run_pool([(0,), (1,), (2,), (3,)], 1, _square_or_fail, lambda task, result: kept.append(result))
    assert kept == [0]                      # runs 2 and 3 never started (one worker: 1 was alone in flight)


def test_runs_of_one_row_with_different_settings_are_refused():
    record = {"runs": [_run("MAXL", 0, 0.9), dict(_run("MAXL", 1, 0.9), config={"epochs": 2})]}
    with pytest.raises(SystemExit, match="digits MAXL: runs with different settings"):
        claims.summarise(record)


def test_smoke_run_trains_every_kind_of_row_and_resumes_without_retraining(tmp_path):
    out = tmp_path / "claims.json"
    argv = ["--datasets", "digits", "--seeds", "0", "--workers", "1", "--epochs", "1", "--max-steps-per-epoch", "2",
            "--methods", "vanilla dot-sgd", "MAXL", "MN ft:1+S", "wide cos-adamw",
            "--json", str(out), "--md", str(tmp_path / "claims.md")]

    def bench(args):        # as a user runs it: its process pool imports the script by its path
        return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600)

    first = bench(argv)
    assert first.returncode == 0, first.stderr
    record = json.loads(out.read_text())
    runs = {r["method"]: r for r in record["runs"]}
    assert set(runs) == {"vanilla dot-sgd", "MAXL", "MN ft:1+S", "wide cos-adamw"}
    assert runs["MAXL"]["config"]["method"] == "maxl"
    assert runs["wide cos-adamw"]["config"]["backbone"] == "digits_cnn_wide"
    assert all(0.0 <= r["test_accuracy"] <= 1.0 and r["epochs"] == 1 for r in runs.values())
    assert record["overrides"] == {"epochs": 1, "max_steps_per_epoch": 2}
    counts = record["parameters"]["digits"]
    assert counts["wide cos-adamw"] >= counts["MN ft:1+S"] > counts["vanilla dot-sgd"]
    assert "| MAXL |" in (tmp_path / "claims.md").read_text()
    again = bench(argv)                                             # resumed: nothing left to train
    assert again.returncode == 0 and "0 runs to do (4 already in" in again.stdout
    resumed = json.loads(out.read_text())
    assert resumed["runs"] == record["runs"] and len(resumed["invocations"]) == 1      # nothing ran: not recorded
    assert resumed["invocations"][0]["runs"] == 4 and resumed["test_examples"] == {"digits": 360}
    resumed["runs"][0]["config"]["lr"] = 0.5                        # as if an earlier mn had another default
    out.write_text(json.dumps(resumed))
    more = bench([*argv[:4], "1", *argv[4:]])                       # seed 1 too: refused before training
    assert more.returncode != 0 and "other settings (lr) than this mn gives" in more.stderr
    assert len(json.loads(out.read_text())["runs"]) == 4
    other = bench([*argv[:6], "--epochs", "2", *argv[8:]])          # other settings never mix into one JSON
    assert other.returncode != 0 and "overrides" in other.stderr
