"""What `mn train` shows while it trains: one line per epoch (epoch, train loss, validation metric, best so far,
lr, epoch time, ETA) agreeing with metrics.jsonl; a progress bar with the running loss on a terminal only; no
carriage return in a log."""
import io
import json
import re
import subprocess
import sys

from mn.cli import main
from mn.training.console import Console

LINE = re.compile(r"seed (\d+) \| epoch (\d+)/(\d+) \| train loss (\S+) \| val accuracy (\S+) \| best (\S+) "
                  r"\(epoch (\d+)\) \| lr (\S+) \| (\S+) s \| ETA (\d+:\d\d)")


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_one_line_per_epoch_agrees_with_the_metrics_file(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--dataset", "spirals", "--epochs", "3", "--max-steps-per-epoch", "2", "--seeds", "0", "1",
                 "--lr-milestones", "2", "--out-dir", str(out)]) == 0
    captured = capsys.readouterr()
    lines = [LINE.fullmatch(line) for line in captured.err.splitlines() if line.startswith("seed ")]
    assert len(lines) == 6 and all(lines), captured.err
    for seed in (0, 1):
        records = [json.loads(line) for line in (out / f"seed{seed}" / "metrics.jsonl").read_text().splitlines()]
        epochs = [r for r in records if r["event"] == "epoch"]
        best = 0.0
        for m, r in zip([m for m in lines if m.group(1) == str(seed)], epochs):
            best = max(best, r["val_accuracy"])
            assert (int(m.group(2)), int(m.group(3))) == (r["epoch"], 3)
            assert m.group(4) == f"{r['train_loss']:.4f}" and m.group(5) == f"{r['val_accuracy']:.4f}"
            assert m.group(6) == f"{best:.4f}" and m.group(8) == f"{r['lr']:.1e}"
            assert float(m.group(9)) >= 0
    assert [m.group(8) for m in lines[:3]] == ["1.0e-02", "1.0e-02", "1.0e-03"], "the rate each epoch trained with"
    assert lines[-1].group(10) == "0:00"
    assert "\r" not in captured.err and "\r" not in captured.out


def test_eta_counts_the_runs_still_to_come():
    """Epochs of 10 s: after the first of 3 epochs of the first of 2 runs, 5 epochs are left."""
    class FakeRun:
        cfg = type("Cfg", (), {"epochs": 3})()
        seed, fold, epoch, best, best_epoch = 0, None, 1, {"accuracy": 0.5}, 1

        def finished(self):
            return False

    lines = []
    console = Console(lines.append, bars=False, runs=2)
    console.start_run()
    console.epoch(FakeRun(), {"train_loss": 1.0, "val_accuracy": 0.5, "lr": 0.1, "seconds": 10.0})
    assert lines[0].endswith("| 10.0 s | ETA 0:50")


def test_progress_bar_shows_the_running_loss_on_a_terminal_only(tmp_path, monkeypatch):
    monkeypatch.setattr(Console, "bar_interval", 0)      # redraw every step, so a short run shows its loss
    args = ["train", "--dataset", "spirals", "--epochs", "1", "--max-steps-per-epoch", "4"]
    for stdout_terminal, bars in ((True, True), (False, False)):
        out, err = (Terminal() if stdout_terminal else io.StringIO()), Terminal()
        monkeypatch.setattr(sys, "stdout", out)
        monkeypatch.setattr(sys, "stderr", err)
        assert main([*args, "--out-dir", str(tmp_path / str(stdout_terminal))]) == 0
        monkeypatch.undo()
        monkeypatch.setattr(Console, "bar_interval", 0)
        text = err.getvalue()
        assert ("\r" in text) == bars, text
        assert bool(re.search(r"seed 0 epoch 1/1: .*\| [1-4]/4 .*loss \d\.\d{4}", text)) == bars, text
        assert re.search(r"(^|\r)seed 0 \| epoch 1/1 \| train loss", text, re.M), "the epoch line either way"
    out, err = Terminal(), Terminal()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    assert main([*args, "--no-progress", "--out-dir", str(tmp_path / "off")]) == 0
    monkeypatch.undo()
    assert "\r" not in err.getvalue()


def test_a_log_gets_no_carriage_returns(tmp_path):
    """stdout and stderr into files or pipes (a log): no bars, though --no-progress was not given."""
    run = subprocess.run([sys.executable, "-m", "mn", "train", "--dataset", "spirals", "--epochs", "2",
                          "--max-steps-per-epoch", "3", "--out-dir", str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "\r" not in run.stdout and "\r" not in run.stderr
    assert len([line for line in run.stderr.splitlines() if LINE.fullmatch(line)]) == 2
