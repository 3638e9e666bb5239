"""`mn plot RUN_DIR [RUN_DIR ...] --out curves.png`: train / validation curves from metrics.jsonl, with labelled
axes and a legend; a folder of several seeds is drawn as their mean; folders without curves are one-line errors."""
import json
import statistics

import pytest
from test_analysis_figures import assert_png, check_figure, saved_figures  # noqa: F401  (a fixture)

from mn.cli import main

QUICK = ["--dataset", "spirals", "--epochs", "3", "--max-steps-per-epoch", "2", "--no-progress"]


def _epochs(path):
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["event"] == "epoch"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    assert main(["train", *QUICK, "--method", "mn", "--seeds", "0", "1", "--out-dir", str(root / "mn")]) == 0
    assert main(["train", *QUICK, "--method", "vanilla", "--out-dir", str(root / "vanilla")]) == 0
    return root


def test_plot_draws_train_and_validation_curves_of_several_runs(runs, tmp_path, capsys, saved_figures):  # noqa: F811
    capsys.readouterr()
    png = tmp_path / "curves.png"
    assert main(["plot", str(runs / "mn"), str(runs / "vanilla"), "--out", str(png)]) == 0
    assert_png(png)
    record = json.loads(capsys.readouterr().out)
    assert record["plot"] == str(png) and [r["label"] for r in record["runs"]] == ["mn", "vanilla"]
    ((name, fig),) = saved_figures
    check_figure(fig, name)
    loss, metric = fig.axes
    assert loss.get_xlabel() == metric.get_xlabel() == "epoch"
    assert "loss" in loss.get_ylabel() and "validation accuracy" in metric.get_ylabel()
    legend = [t.get_text() for t in loss.get_legend().get_texts()]
    assert legend == ["mn: train (mean of 2)", "mn: validation (mean of 2)", "vanilla: train", "vanilla: validation"]
    lines = {line.get_label(): line for line in loss.get_lines() + metric.get_lines()}
    vanilla = _epochs(runs / "vanilla" / "seed0" / "metrics.jsonl")
    assert list(lines["vanilla: train"].get_xdata()) == [1, 2, 3]
    assert list(lines["vanilla: train"].get_ydata()) == pytest.approx([r["train_loss"] for r in vanilla])
    seeds = [_epochs(runs / "mn" / f"seed{s}" / "metrics.jsonl") for s in (0, 1)]
    mean_accuracy = [statistics.fmean(s[e]["val_accuracy"] for s in seeds) for e in range(3)]
    validation = [line for line in metric.get_lines() if line.get_label().startswith("mn:")]
    assert list(validation[0].get_ydata()) == pytest.approx(mean_accuracy)
    assert record["runs"][0]["series"] == 2 and record["runs"][0]["last_epoch"] == 3


def test_plot_takes_a_seed_folder_and_labels_digits_runs_aux_loss(tmp_path, capsys, saved_figures):  # noqa: F811
    out = tmp_path / "digits"
    assert main(["train", "--dataset", "digits", "--num-entries", "20", "--epochs", "2", "--max-steps-per-epoch", "1",
                 "--no-progress", "--out-dir", str(out)]) == 0
    assert main(["plot", str(out / "seed0"), "--out", str(tmp_path / "c.png")]) == 0
    ((name, fig),) = saved_figures
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == \
        ["seed0: train (+ aux. loss)", "seed0: validation"]


def test_plot_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["plot", str(tmp_path / "empty"), "--out", str(tmp_path / "c.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mn plot: error: ") and "holds no metrics.jsonl" in err and "\n" not in err
    assert main(["plot", str(tmp_path / "nope"), "--out", str(tmp_path / "c.png")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert not (tmp_path / "c.png").exists()


def test_plot_refuses_a_run_whose_config_is_not_json(runs, tmp_path, capsys):
    """It used to read as no configuration, silently dropping the auxiliary-loss label."""
    import shutil
    broken = tmp_path / "broken"
    shutil.copytree(runs / "mn", broken)
    (broken / "config.json").write_text("{not json")
    assert main(["plot", str(broken), "--out", str(tmp_path / "c.png")]) == 2
    err = capsys.readouterr().err
    assert f"{broken / 'config.json'} is not valid JSON" in err and not (tmp_path / "c.png").exists()
