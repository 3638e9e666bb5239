"""The README's examples run: the regression example of "Use" (fewer steps), and the training section shows
the run folder's files, --dry-run, mn plot and --version as the command has them; the Results section quotes the
committed summary of bench/paper_claims.py."""
import math
import re
from pathlib import Path

from helpers import mnist5k_protocol_quote

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _python_blocks():
    return re.findall(r"```python\n(.*?)```", README, re.S)


def test_the_regression_example_calls_and_trains_the_layer(capsys):
    (code,) = [block for block in _python_blocks() if "mn.MetaNeighborhoods(mlp" in block]
    assert "range(300)" in code and "loss.backward()" in code and "opt.step()" in code
    namespace = {}
    exec(compile(code.replace("range(300)", "range(5)"), "README.md", "exec"), namespace)
    assert namespace["reg"](namespace["x_test"]).shape == (200, 1)
    assert math.isfinite(namespace["test_mse"])
    assert capsys.readouterr().out.startswith("test MSE ")


def test_the_training_section_shows_what_the_command_does():
    import dataclasses

    from mn.training.config import TrainConfig
    from mn.training.rundir import INVOCATION

    section = README[README.index("## Training (`mn` command)"):README.index("| layer | what it is |")]
    for shown in ("config.json", "seed0/metrics.jsonl", "seed0/last.pt", "seed0/best.pt", "--dry-run", "mn plot",
                  "mn --version", "--resume", "--overwrite"):
        assert shown in section, shown
    dry_run = section[section.index('{"dataset"'):]
    dry_run = dry_run[:dry_run.index("}") + 1]
    keys = re.findall(r'"(\w+)":', dry_run)
    assert keys == [f.name for f in dataclasses.fields(TrainConfig) if f.name not in INVOCATION]


def test_the_results_section_quotes_the_committed_protocol_summary():
    q = mnist5k_protocol_quote()
    (v, v_low, v_high), (w, w_low, w_high) = q["diff"]["best_vanilla"], q["diff"]["best_wide"]
    section = " ".join(README.split("## Results")[1].split("## Analysis")[0].split())
    assert f"MN ft:1+S {q['acc']['MN ft:1+S']} against the best vanilla head {q['acc'][q['best_vanilla']]} " \
           f"({v} [{v_low}, {v_high}]), the best wider net {q['acc'][q['best_wide']]} ({w} [{w_low}, {w_high}]) " \
           f"and MAXL {q['acc']['MAXL']}" in section
