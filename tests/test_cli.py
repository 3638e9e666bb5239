"""The `mn` command: demo (fast mode in CI), train with flags and config files, eval, and clean errors."""
import json
import subprocess
import sys

import pytest

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
