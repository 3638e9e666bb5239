"""The `mn` command: demo (fast mode in CI), train with flags and config files, eval, and clean errors."""
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from mn.cli import main

from helpers import mnist5k_protocol_quote

ROOT = Path(__file__).resolve().parents[1]


def test_demo_fast_prints_the_results_table(capsys):
    assert main(["demo", "--fast", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "| digits" in out and "convnet + MN head" in out and "linear + MN" in out and "fast mode" in out
    # what it trains, while it trains: before the table, a line per model and per digits epoch
    progress, table = out.split("| task |")
    assert "digits: training convnet + cosine layer (vanilla), 1 epoch, seed 3" in progress
    assert "digits: training convnet + MN head, 1 epoch, seed 3" in progress
    assert "  seed 3 | epoch 1/1 | train loss" in progress
    assert "two spirals: training linear + MN, 20 steps of 128 (2.56 epochs), seed 3" in progress
    # the table says the seeds and the training length
    assert table.startswith(" model | seed | training | test accuracy |")
    assert "| convnet + MN head | 3 | 1 epoch of 2 steps |" in table
    assert "| linear + MN | 3 | 20 steps of 128 (2.56 epochs) |" in table
    # then the strongest measured result, quoted with the committed summary's numbers
    q = mnist5k_protocol_quote()
    (v, v_low, v_high), (w, w_low, w_high) = q["diff"]["best_vanilla"], q["diff"]["best_wide"]
    quote = " ".join(table.split("total ")[1].split()[2:])
    assert len(q["seeds"]) == 5 and f"MN ft:1 reaches {q['acc']['MN ft:1+S']} test accuracy" in quote
    assert f"vanilla output layers {q['acc'][q['best_vanilla']]} ({v} points, 95% interval [{v_low}, {v_high}])" \
        in quote
    assert f"more parameters {q['acc'][q['best_wide']]} ({w} [{w_low}, {w_high}])" in quote


def test_train_then_eval(tmp_path, capsys):
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"dataset": "spirals", "method": "mn", "epochs": 2}))
    assert main(["train", "--config", str(config), "--seeds", "0", "1", "--max-steps-per-epoch", "2",
                 "--out-dir", str(tmp_path / "out"), "--no-progress"]) == 0
    lines = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
    assert [l["seed"] for l in lines[:2]] == [0, 1] and lines[-1]["event"] == "summary"
    assert (tmp_path / "out" / "seed1" / "metrics.jsonl").exists()
    assert main(["eval", str(tmp_path / "out" / "seed1" / "best.pt")]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["accuracy"] == lines[1]["test_accuracy"] and evaluated["seed"] == 1


def test_errors_are_one_line_messages(tmp_path, capsys):
    assert main(["train", "--dataset", "cifar10", "--data-dir", str(tmp_path)]) == 2
    assert "CIFAR-10 not found" in capsys.readouterr().err
    assert main(["train", "--dataset", "digits", "--entry-dropout", "2"]) == 2
    assert "entry_dropout must be" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "missing.pt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_python_dash_m_mn_is_the_command():
    out = subprocess.run([sys.executable, "-m", "mn", "train", "--help"], capture_output=True, text=True, check=True)
    assert "--inner-steps" in out.stdout and "--seeds" in out.stdout


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert all(n in err for n in needles), err
    return err


def test_cuda_device_without_cuda_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    quick = ["--dataset", "spirals", "--epochs", "1", "--max-steps-per-epoch", "1", "--no-progress"]
    assert main(["train", *quick, "--device", "cuda"]) == 2
    _one_line_error(capsys, "mn train: error: --device 'cuda': CUDA is not available")
    assert main(["train", *quick, "--device", "cpu", "--out-dir", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "seed0" / "best.pt"), "--device", "cuda"]) == 2
    _one_line_error(capsys, "mn eval: error: --device 'cuda': CUDA is not available")


@pytest.mark.parametrize("content, expected", [
    ("a,y\n1,2\n", "tiny.csv: 1 row(s) is fewer than the 5 cross-validation folds"),
    ("a,y\n1,2\n3,4\n5,6\n", "tiny.csv: 3 row(s) is fewer than the 5 cross-validation folds"),
    ("a,y\n" + "".join(f"{i},{i}e199\n" for i in range(1, 9)), "tiny.csv: values up to 8e+199 overflow float32"),
], ids=["1-row", "3-rows", "1e200"])
def test_unusable_csv_is_a_one_line_error_naming_the_file(tmp_path, capsys, content, expected):
    (tmp_path / "tiny.csv").write_text(content)
    assert main(["train", "--dataset", f"csv:{tmp_path / 'tiny.csv'}", "--epochs", "1", "--no-progress"]) == 2
    _one_line_error(capsys, "mn train: error:", expected)


def test_eval_opens_no_path_the_checkpoint_names(tmp_path, capsys, monkeypatch):
    csv = tmp_path / "table.csv"
    csv.write_text("a,b,y\n" + "".join(f"{i},{i % 7},{i * 0.3}\n" for i in range(40)))
    quick = ["--epochs", "1", "--max-steps-per-epoch", "1", "--fold", "0", "--no-progress"]
    assert main(["train", "--dataset", f"csv:{csv}", *quick, "--out-dir", str(tmp_path / "csv-run")]) == 0
    capsys.readouterr()
    checkpoint = str(tmp_path / "csv-run" / "seed0" / "fold0" / "best.pt")
    assert main(["eval", checkpoint]) == 2
    _one_line_error(capsys, f"was trained on csv:{csv}", "pass --dataset csv:<path>")
    assert main(["eval", checkpoint, "--dataset", f"csv:{csv}"]) == 0
    assert json.loads(capsys.readouterr().out)["dataset"] == f"csv:{csv}"
    assert main(["eval", checkpoint, "--dataset", "digits"]) == 2
    _one_line_error(capsys, "--dataset 'digits' does not fit")

    # --data-dir: the stored one is not used either; the default ($MN_DATA) is, unless --data-dir is passed.
    from test_data_files import write_uci
    write_uci(tmp_path / "files", "gom", rows=40)
    monkeypatch.setenv("MN_DATA", str(tmp_path / "empty"))
    assert main(["train", "--dataset", "gom", "--data-dir", str(tmp_path / "files"), *quick,
                 "--out-dir", str(tmp_path / "gom-run")]) == 0
    capsys.readouterr()
    checkpoint = str(tmp_path / "gom-run" / "seed0" / "fold0" / "best.pt")
    assert main(["eval", checkpoint]) == 2
    _one_line_error(capsys, "not found: expected " + str(tmp_path / "empty"))
    assert main(["eval", checkpoint, "--data-dir", str(tmp_path / "files")]) == 0


def test_version_comes_from_the_package_metadata(capsys, monkeypatch):
    import importlib.metadata

    import mn
    from mn import _version

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"mn {importlib.metadata.version('mn')}\n"
    assert mn.__version__ == importlib.metadata.version("mn")

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)
    monkeypatch.setattr(importlib.metadata, "version", not_installed)       # a source checkout, not installed
    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert _version.package_version() == pyproject["version"]


def test_license_is_the_mit_one_pyproject_declares():
    tomllib = pytest.importorskip("tomllib")
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"] == {"text": "MIT"}
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n\nCopyright (c) 2026 the mn authors\n")
    assert "Permission is hereby granted, free of charge" in text and 'THE SOFTWARE IS PROVIDED "AS IS"' in text


def _subcommands():
    from mn.cli import build_parser
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return sub.choices


def test_help_lists_the_choices_and_every_option_is_explained():
    from mn.data import DATASETS
    from mn.training.config import ALL_BACKBONES, METHODS

    text = " ".join(subprocess.run([sys.executable, "-m", "mn", "train", "--help"], capture_output=True, text=True,
                                   check=True).stdout.split())
    for name in (*DATASETS, "csv:<path>", *METHODS, *ALL_BACKBONES):
        assert name in text, name
    for command in ("train", "eval", "plot", "demo"):
        for action in _subcommands()[command]._actions:
            if action.dest != "help":
                assert action.help and len(action.help) > 10, f"mn {command} {action.option_strings or action.dest}"


def test_regression_summary_is_mean_and_std_over_folds_and_seeds(tmp_path, capsys):
    assert main(["train", "--dataset", "diabetes", "--method", "vanilla", "--epochs", "2", "--folds", "3",
                 "--seeds", "0", "1", "--out-dir", str(tmp_path), "--no-progress"]) == 0
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines()]
    summary = records[-1]
    values = [r["test_mse"] for r in records[:-1]]
    assert len(values) == 6 and summary["event"] == "summary" and summary["n"] == 6
    assert summary["mean"] == pytest.approx(statistics.fmean(values))
    assert summary["std"] == pytest.approx(statistics.stdev(values)) and summary["std"] > 0
    assert summary["over"] == "3 folds x 2 seeds"
    for seed, cv in zip((0, 1), summary["cv_per_seed"]):
        assert cv["std"] == pytest.approx(statistics.stdev(values[3 * seed:3 * seed + 3]))
    line = captured.err.strip().splitlines()[-2]
    assert line == (f"diabetes vanilla: test_mse {summary['mean']:.4f} ± {summary['std']:.4f} "
                    f"(mean ± std over 3 folds x 2 seeds: seeds [0, 1])")


def test_one_run_has_no_spread_to_report(tmp_path, capsys):
    assert main(["train", "--dataset", "spirals", "--epochs", "1", "--max-steps-per-epoch", "1",
                 "--out-dir", str(tmp_path), "--no-progress"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.splitlines()[-1])
    assert summary["n"] == 1 and "±" not in captured.err
    assert f"spirals mn: test_accuracy {summary['mean']:.4f} (one run, seed 0: no spread to report)" in captured.err
