"""The `mn` command: demo (fast mode in CI), train with flags and config files, eval, and clean errors."""
import json
import subprocess
import sys

from mn.cli import main


def test_demo_fast_prints_the_results_table(capsys):
    assert main(["demo", "--fast"]) == 0
    out = capsys.readouterr().out
    assert "| digits" in out and "convnet + MN head" in out and "linear + MN" in out and "fast mode" in out


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
