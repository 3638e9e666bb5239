"""`mn table RUN_DIR ...`: finished runs in Table 1's layout (rows methods, columns dataset / backbone), each cell
the mean ± sample std over the seeds found with n; regression runs as a table of test MSE; unfinished runs
listed, never dropped; a folder that is no run, or two folders that would mix configurations in a cell, is a
one-line error naming them. Numbers are checked against means and standard deviations computed here by hand."""
import json
import math
import shutil
from pathlib import Path

import pytest

from mn.cli import main
from mn.training.config import make_config
from mn.training.rundir import write_config
from mn.training.table import row_label

QUICK = ["--epochs", "1", "--max-steps-per-epoch", "2", "--no-progress"]


def _results(path):
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["event"] == "result"]


def _hand_mean_std(values):
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def _table(capsys, *args):
    capsys.readouterr()
    assert main(["table", *map(str, args)]) == 0
    return capsys.readouterr().out


def _json(capsys, *args):
    return json.loads(_table(capsys, *args, "--json"))


def _cell(gathered, row, dataset, backbone):
    found = [c for t in gathered["tables"] for c in t["cells"]
             if (c["row"], c["dataset"], c["backbone"]) == (row, dataset, backbone)]
    return found[0] if found else None


def _markdown_rows(text):
    """{method: [cell texts]} and the header's columns of the first table in `text`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| method |"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    header = [c.strip() for c in lines[start].strip("|").split("|")][1:]
    assert lines[start + 1] == "| --- |" + " --- |" * len(header)
    rows = {}
    for line in lines[start + 2:end]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return header, rows


def _error(capsys, *needles):
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith("mn table: error: ") and all(n in err for n in needles), err


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory):
    """Real tiny runs of mn train: digits MN (2 seeds), digits vanilla dot-adamw (1 seed), diabetes MN (5 folds)."""
    root = tmp_path_factory.mktemp("runs")
    assert main(["train", "--dataset", "digits", "--num-entries", "20", *QUICK, "--seeds", "0", "1",
                 "--out-dir", str(root / "digits-mn")]) == 0
    assert main(["train", "--dataset", "digits", "--method", "vanilla", "--classifier", "dot", *QUICK,
                 "--out-dir", str(root / "digits-dot")]) == 0
    assert main(["train", "--dataset", "diabetes", "--num-entries", "20", *QUICK,
                 "--out-dir", str(root / "diabetes-mn")]) == 0
    return root


def test_real_runs_give_the_hand_computed_means_and_stds(real_runs, capsys):
    mn_values = [_results(real_runs / "digits-mn" / f"seed{s}" / "metrics.jsonl")[0]["test_accuracy"] for s in (0, 1)]
    dot_value = _results(real_runs / "digits-dot" / "seed0" / "metrics.jsonl")[0]["test_accuracy"]
    mse_values = [_results(real_runs / "diabetes-mn" / "seed0" / f"fold{f}" / "metrics.jsonl")[0]["test_mse"]
                  for f in range(5)]
    runs = [real_runs / name for name in ("digits-mn", "digits-dot", "diabetes-mn")]
    gathered = _json(capsys, *runs)
    classification, regression = gathered["tables"]
    assert (classification["metric"], regression["metric"]) == ("test_accuracy", "test_mse")
    assert classification["columns"] == [{"dataset": "digits", "backbone": "digits_cnn"}]
    assert regression["columns"] == [{"dataset": "diabetes", "backbone": "mlp"}]
    mean, std = _hand_mean_std(mn_values)
    cell = _cell(gathered, "ours ft:1+S", "digits", "digits_cnn")
    assert (cell["n"], cell["mean"], cell["std"]) == (2, pytest.approx(mean), pytest.approx(std))
    assert [(r["seed"], r["fold"]) for r in cell["runs"]] == [(0, None), (1, None)]
    cell = _cell(gathered, "vanilla dot-adamw", "digits", "digits_cnn")
    assert (cell["n"], cell["mean"], cell["std"]) == (1, pytest.approx(dot_value), 0.0)
    mean, std = _hand_mean_std(mse_values)
    cell = _cell(gathered, "ours ft:1+S", "diabetes", "mlp")
    assert (cell["n"], cell["mean"], cell["std"]) == (5, pytest.approx(mean), pytest.approx(std))
    assert gathered["unfinished"] == []

    text = _table(capsys, *runs)
    header, rows = _markdown_rows(text)
    assert header == ["digits / digits_cnn"]
    assert list(rows) == ["vanilla dot-sgd", "vanilla dot-adamw", "vanilla cos-sgd", "vanilla cos-adamw", "MAXL",
                          "ours ft:1+S", "ours ft:1+D", "ours ft:3+S", "ours ft:3+D"]
    mean, std = _hand_mean_std(mn_values)
    assert rows["ours ft:1+S"] == [f"{100 * mean:.2f} ± {100 * std:.2f} (n=2)"]
    assert rows["vanilla dot-adamw"] == [f"{100 * dot_value:.2f} (n=1)"]
    assert rows["vanilla cos-sgd"] == rows["MAXL"] == rows["ours ft:3+D"] == ["–"]
    mean, std = _hand_mean_std(mse_values)
    regression_text = text[text.index("test MSE"):]
    header, rows = _markdown_rows(regression_text)
    assert header == ["diabetes / mlp"] and list(rows) == ["vanilla", "ours ft:1+S"]
    assert rows["ours ft:1+S"] == [f"{mean:#.4g} ± {std:#.2g} (n=5)"] and rows["vanilla"] == ["–"]


def _fake_run(folder, settings, results, *, unfinished=(), epochs_done=3):
    """A run folder as mn train writes it: config.json (the resolved configuration) and per seed a metrics.jsonl
    of epoch records then the result record; the seeds in `unfinished` stop after `epochs_done` epochs."""
    seeds = sorted({*results, *unfinished})
    cfg = make_config({**settings, "seeds": seeds})
    write_config(folder, cfg)
    for seed in seeds:
        lines = [{"seed": seed, "fold": None, "event": "epoch", "epoch": e, "lr": 1e-3, "train_loss": 1.0,
                  "val_loss": 1.0, "val_accuracy": 0.5, "seconds": 1.0} for e in range(1, epochs_done + 1)]
        if seed in results:
            lines.append({"seed": seed, "fold": None, "event": "result", "epochs": epochs_done, "best_epoch": 1,
                          "test_loss": 0.3, "test_accuracy": results[seed], "val_loss": 1.0, "val_accuracy": 0.5})
        (folder / f"seed{seed}").mkdir(parents=True)
        (folder / f"seed{seed}" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return folder


CELL = dict(dataset="cifar10", backbone="resnet29", method="mn", inner_steps=1, inner_lr="diagonal")


def test_seeds_of_one_cell_in_several_folders_are_pooled_and_columns_follow_the_paper(tmp_path, capsys):
    a = _fake_run(tmp_path / "a", CELL, {0: 0.95, 1: 0.96})
    b = _fake_run(tmp_path / "b", CELL, {2: 0.94})
    c = _fake_run(tmp_path / "c", dict(CELL, backbone="densenet40bc", method="vanilla", optimizer="sgd",
                                       classifier="dot"), {0: 0.9})
    d = _fake_run(tmp_path / "d", dict(CELL, dataset="cifar100", inner_steps=3, inner_lr="scalar"), {5: 0.75})
    gathered = _json(capsys, b, a, c, d, a)                 # a twice: counted once
    cell = _cell(gathered, "ours ft:1+D", "cifar10", "resnet29")
    assert (cell["n"], cell["mean"], cell["std"]) == (3, pytest.approx(0.95), pytest.approx(0.01))
    assert sorted(r["seed"] for r in cell["runs"]) == [0, 1, 2]
    header, rows = _markdown_rows(_table(capsys, d, c, b, a))
    assert header == ["cifar10 / densenet40bc", "cifar10 / resnet29", "cifar100 / resnet29"]
    assert rows["ours ft:1+D"] == ["–", "95.00 ± 1.00 (n=3)", "–"]
    assert rows["vanilla dot-sgd"] == ["90.00 (n=1)", "–", "–"]
    assert rows["ours ft:3+S"] == ["–", "–", "75.00 (n=1)"]


def test_unfinished_and_unstarted_runs_are_listed_not_averaged(tmp_path, capsys):
    run = _fake_run(tmp_path / "run", CELL, {0: 0.9}, unfinished=(1,), epochs_done=3)
    config = json.loads((run / "config.json").read_text())
    config["seeds"] = [0, 1, 2]                               # seed 2: asked for, no folder yet
    (run / "config.json").write_text(json.dumps(config))
    gathered = _json(capsys, run)
    cell = _cell(gathered, "ours ft:1+D", "cifar10", "resnet29")
    assert (cell["n"], cell["mean"]) == (1, pytest.approx(0.9))
    assert gathered["unfinished"] == [
        {"run_dir": str(run), "seed": 1, "fold": None, "epochs_done": 3, "epochs": 400},
        {"run_dir": str(run), "seed": 2, "fold": None, "epochs_done": 0, "epochs": 400}]
    text = _table(capsys, run)
    assert f"- {run} seed 1: epoch 3 of 400" in text and f"- {run} seed 2: not started" in text
    assert "90.00 (n=1)" in text


def test_a_cell_with_only_unfinished_runs_has_its_column_with_dashes(tmp_path, capsys):
    run = _fake_run(tmp_path / "run", CELL, {}, unfinished=(0,), epochs_done=2)
    text = _table(capsys, run)
    header, rows = _markdown_rows(text)
    assert header == ["cifar10 / resnet29"] and set(map(tuple, rows.values())) == {("–",)}
    assert f"- {run} seed 0: epoch 2 of 400" in text
    (run / "seed0" / "metrics.jsonl").unlink()             # killed before its first epoch: no task known yet
    text = _table(capsys, run)
    assert "No finished run" in text and "| method" not in text and f"- {run} seed 0: not started" in text


def test_regression_folds_not_yet_run_are_listed(real_runs, tmp_path, capsys):
    gathered = _json(capsys, real_runs / "diabetes-mn")
    assert gathered["unfinished"] == []
    # the same run, its fold 3 killed before its result and fold 4 never started
    run = tmp_path / "diabetes"
    shutil.copytree(real_runs / "diabetes-mn", run)
    metrics = run / "seed0" / "fold3" / "metrics.jsonl"
    metrics.write_text("".join(line + "\n" for line in metrics.read_text().splitlines()
                               if json.loads(line)["event"] == "epoch"))
    shutil.rmtree(run / "seed0" / "fold4")
    gathered = _json(capsys, run)
    assert _cell(gathered, "ours ft:1+S", "diabetes", "mlp")["n"] == 3
    assert [(u["seed"], u["fold"], u["epochs_done"]) for u in gathered["unfinished"]] == [(0, 3, 1), (0, 4, 0)]
    assert f"- {run} seed 0 fold 4: not started" in _table(capsys, run)


def test_a_folder_that_is_not_a_run_is_an_error_naming_it(tmp_path, capsys):
    good = _fake_run(tmp_path / "good", CELL, {0: 0.9})
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["table", str(good), str(empty)]) == 2
    _error(capsys, str(empty), "not a run folder")
    assert main(["table", str(tmp_path / "missing")]) == 2
    _error(capsys, str(tmp_path / "missing"), "does not exist")
    (tmp_path / "notes.txt").write_text("x")
    assert main(["table", str(tmp_path / "notes.txt")]) == 2
    _error(capsys, "notes.txt", "is a file")
    assert main(["table", str(good / "seed0")]) == 2
    _error(capsys, "seed0", "pass the run folder above it")
    (good / "config.json").write_text("{not json")
    assert main(["table", str(good)]) == 2
    _error(capsys, str(good / "config.json"), "not valid JSON")


def test_one_cell_never_mixes_configurations_or_counts_a_seed_twice(tmp_path, capsys):
    a = _fake_run(tmp_path / "a", CELL, {0: 0.95})
    short = _fake_run(tmp_path / "short", dict(CELL, epochs=1), {1: 0.5})
    assert main(["table", str(a), str(short)]) == 2
    _error(capsys, str(a), str(short), "epochs (400 vs 1)")
    again = _fake_run(tmp_path / "again", CELL, {0: 0.94})
    assert main(["table", str(a), str(again)]) == 2
    _error(capsys, str(a), str(again), "seed 0 of ours ft:1+D on cifar10 / resnet29")


def _records(folder, records):
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def _regression_result(val, test):
    return [{"event": "epoch", "epoch": 1, "train_loss": 1.0, "val_loss": val, "val_mse": val},
            {"event": "result", "epochs": 1, "best_epoch": 1, "test_loss": test, "test_mse": test, "val_loss": val,
             "val_mse": val}]


def test_a_weight_decay_grid_counts_the_value_mn_train_chooses_on_validation(tmp_path, capsys):
    run = tmp_path / "grid"
    write_config(run, make_config({"dataset": "diabetes", "folds": 3}))
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "weight_decay_grid": [0.1, 0.01]}))
    fold = run / "seed0" / "fold{}" / "wd{:g}"
    _records(Path(str(fold).format(0, 0.1)), _regression_result(0.5, 0.7))
    _records(Path(str(fold).format(0, 0.01)), _regression_result(0.4, 0.9))      # lower validation MSE: chosen
    _records(Path(str(fold).format(1, 0.1)), _regression_result(0.3, 0.6))       # a tie: the first in the grid
    _records(Path(str(fold).format(1, 0.01)), _regression_result(0.3, 0.2))
    _records(Path(str(fold).format(2, 0.1)), _regression_result(0.3, 0.6))
    _records(Path(str(fold).format(2, 0.01)), _regression_result(0.3, 0.2)[:1])  # its run not finished
    gathered = _json(capsys, run)
    cell = _cell(gathered, "ours ft:1+S", "diabetes", "mlp")
    assert [(r["fold"], r["weight_decay"], r["value"]) for r in cell["runs"]] == [(0, 0.01, 0.9), (1, 0.1, 0.6)]
    assert (cell["n"], cell["mean"], cell["std"]) == (2, pytest.approx(0.75), pytest.approx(0.15 * math.sqrt(2)))
    assert gathered["unfinished"] == [{"run_dir": str(run), "seed": 0, "fold": 2, "epochs_done": 1,
                                       "epochs": 500, "weight_decay": 0.01}]
    assert f"- {run} seed 0 fold 2 weight decay 0.01: epoch 1 of 500" in _table(capsys, run)


def test_row_labels_name_the_papers_columns():
    assert row_label({"method": "maxl", "backbone": "resnet29"}) == "MAXL"
    assert row_label({"method": "vanilla", "backbone": "resnet56", "classifier": "cosine", "optimizer": "sgd"}) == \
        "vanilla cos-sgd"
    assert row_label({"method": "mn", "backbone": "resnet56", "inner_steps": 3, "inner_lr": "diagonal",
                      "optimizer": "adamw"}) == "ours ft:3+D"
    assert row_label({"method": "mn", "inner_steps": 1, "inner_lr": "scalar", "optimizer": "sgd"}) == \
        "ours ft:1+S (sgd)"
    assert row_label({"method": "vanilla", "backbone": "mlp", "classifier": "cosine", "optimizer": "adamw"}) == \
        "vanilla"


def test_a_real_weight_decay_grid_run_gives_mn_trains_own_summary(tmp_path, capsys):
    run = tmp_path / "grid"
    assert main(["train", "--dataset", "diabetes", "--num-entries", "20", *QUICK, "--folds", "3",
                 "--weight-decay-grid", "0.1", "0.01", "--out-dir", str(run)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    summary = lines[-1]
    cell = _cell(_json(capsys, run), "ours ft:1+S", "diabetes", "mlp")
    assert (cell["n"], cell["mean"], cell["std"]) == (3, pytest.approx(summary["mean"]), pytest.approx(summary["std"]))
    assert [r["weight_decay"] for r in cell["runs"]] == [r["weight_decay"] for r in lines[:-1]]
