"""Interpretability helpers against direct computations on the full B x S attention."""
import pytest
import torch

import mn
from mn.analysis import (
    attention_topk,
    attention_vectors,
    entry_classes,
    inner_step_size,
    knn_neighbours,
    knn_predict,
    target_cosines,
)


@pytest.mark.parametrize("chunk", [3, 7, 100])
def test_attention_topk_equals_full_softmax(chunk):
    g = torch.Generator().manual_seed(0)
    z, keys = torch.randn(6, 5, generator=g, dtype=torch.float64), torch.randn(23, 5, generator=g, dtype=torch.float64)
    full = torch.softmax(4.0 * torch.nn.functional.normalize(z) @ torch.nn.functional.normalize(keys).T, dim=1)
    expected_w, expected_i = full.topk(4, dim=1)
    w, i = attention_topk(z, keys, gamma=4.0, k=4, chunk_size=chunk)
    assert torch.equal(i, expected_i)
    torch.testing.assert_close(w, expected_w, rtol=1e-12, atol=1e-14)


def test_attention_topk_rejects_bad_arguments():
    z, keys = torch.randn(2, 3), torch.randn(4, 3)
    with pytest.raises(ValueError, match="k must be at most the number of entries S = 4"):
        attention_topk(z, keys, gamma=1.0, k=5)
    with pytest.raises(ValueError, match="gamma must be a finite number > 0"):
        attention_topk(z, keys, gamma=0.0)
    with pytest.raises(ValueError, match="must share n"):
        attention_topk(z, torch.randn(4, 2), gamma=1.0)


def test_entry_classes_and_step_size():
    torch.manual_seed(0)
    head = mn.MetaNeighborhoodsHead(6, 3, num_entries=20, inner_lr="feature").double().eval()
    values, classes = entry_classes(head)
    torch.testing.assert_close(values, torch.softmax(10 * head.value_logits, 1))
    assert torch.equal(classes, values.argmax(1))
    z = torch.randn(4, 6, dtype=torch.float64)
    grad, _ = mn.inner_gradient(z, head.keys, head.values, head.weight, head.tau, gamma=head.gamma,
                                backend="autograd")
    expected = torch.stack([(head.inner_lr.abs() * g).norm() for g in grad]) / head.weight.norm()
    torch.testing.assert_close(inner_step_size(head, z), expected.detach(), rtol=1e-12, atol=1e-14)


def test_attention_vectors_are_the_softmax_rows():
    g = torch.Generator().manual_seed(1)
    z, keys = torch.randn(5, 4, generator=g, dtype=torch.float64), torch.randn(9, 4, generator=g, dtype=torch.float64)
    expected = torch.softmax(3.0 * torch.nn.functional.cosine_similarity(z[:, None], keys[None], dim=2), dim=1)
    torch.testing.assert_close(attention_vectors(z, keys, gamma=3.0), expected, rtol=1e-12, atol=1e-14)


def _literal_adapted_weight(head, zi, steps):
    """Paper-literal per-query fine-tuning: `steps` gradient steps of the weighted inner loss, by autograd."""
    cos = torch.nn.functional.cosine_similarity
    w = torch.softmax(head.gamma * cos(zi[None], head.keys, dim=1), dim=0).detach()          # S
    phi = head.weight.detach().clone().requires_grad_(True)
    values, tau, alpha = head.values.detach(), head.tau.detach(), head.inner_lr.abs().detach()
    for _ in range(steps):
        logits = tau * cos(head.keys.detach()[:, None], phi[None], dim=2)                    # S x C
        loss = (w * -(values * torch.log_softmax(logits, dim=1)).sum(1)).sum()
        (g,) = torch.autograd.grad(loss, phi)
        phi = (phi - alpha * g).detach().requires_grad_(True)
    return phi.detach()


@pytest.mark.parametrize("steps", [1, 3])
def test_target_cosines_equal_a_literal_per_query_loop(steps):
    torch.manual_seed(0)
    head = mn.MetaNeighborhoodsHead(6, 3, num_entries=20, inner_steps=steps, inner_lr="feature",
                                    inner_lr_init=0.5, entry_dropout=0.5).double()
    z, y = torch.randn(4, 6, dtype=torch.float64), torch.tensor([0, 2, 1, 2])
    cos = torch.nn.functional.cosine_similarity
    expected_after = torch.stack([cos(z[i], _literal_adapted_weight(head, z[i], steps)[y[i]], dim=0) for i in range(4)])
    expected_before = cos(z, head.weight[y].detach(), dim=1)
    for mode in (head.train, head.eval):     # entry dropout never applies: the same numbers in both modes
        mode()
        before, after = target_cosines(head, z, y)
        torch.testing.assert_close(after, expected_after, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(before, expected_before, rtol=1e-12, atol=1e-14)
    assert not torch.allclose(before, after)
    with pytest.raises(ValueError, match=r"target must have shape \(4,\)"):
        target_cosines(head, z, y[:3])
    with pytest.raises(ValueError, match=r"target must hold class indices in \[0, 3\), got values in \[0, 3\]"):
        target_cosines(head, z, torch.tensor([0, 3, 1, 2]))


@pytest.mark.parametrize("chunk", [2, 100])
def test_knn_predict_majority_with_ties_to_the_nearest(chunk):
    memory = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [-1.0, 0.0]])
    labels = torch.tensor([3, 3, 1, 1, 0])
    queries = torch.tensor([[1.0, 0.05], [0.05, 1.0], [0.72, 0.7]])
    assert knn_neighbours(memory, queries, 2, chunk_size=chunk)[0].tolist() == [0, 1]
    # the third query's 4 nearest hold labels 3, 1, 3, 1 (nearest first): a tie, broken towards the nearest, 3;
    # the first query's 3 nearest hold 3, 3, 1: the majority, 3; the second's 3, 1, 1 -> 1 (majority over rank)
    assert knn_predict(memory, labels, queries, 1, chunk_size=chunk).tolist() == [3, 1, 3]
    assert knn_predict(memory, labels, queries, 4, chunk_size=chunk).tolist()[2] == 3
    assert knn_predict(memory, labels, queries[:2], 3, chunk_size=chunk).tolist() == [3, 1]
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, 5\]"):
        knn_predict(memory, labels, queries, 6)
    with pytest.raises(ValueError, match="labels must have shape"):
        knn_predict(memory, labels[:3], queries, 1)


def test_paired_difference_against_hand_computed_t_interval():
    from mn.analysis.stats import paired_difference, summary, t_quantile_975

    # Student's t 0.975 quantiles from a printed table (df 1, 2, 30)
    assert t_quantile_975(1) == pytest.approx(12.706, abs=1e-3)
    assert t_quantile_975(2) == pytest.approx(4.303, abs=1e-3)
    assert t_quantile_975(30) == pytest.approx(2.042, abs=1e-3)
    d = paired_difference([0.90, 0.80, 0.70], [0.85, 0.80, 0.60])      # differences 0.05, 0.00, 0.10
    assert d["values"] == pytest.approx([0.05, 0.0, 0.1]) and d["n"] == 3
    assert d["mean"] == pytest.approx(0.05) and d["std"] == pytest.approx(0.05)   # sqrt((0.05² + 0.05²) / 2)
    half = 4.302652729911275 * 0.05 / 3 ** 0.5                          # 0.12420...
    assert d["ci95"] == pytest.approx([0.05 - half, 0.05 + half])
    one = paired_difference([0.5], [0.25])
    assert one["mean"] == 0.25 and one["std"] is None and one["ci95"] is None
    assert summary([1, 2, 4])["std"] == pytest.approx(1.5275252316519468)
    with pytest.raises(ValueError, match="must pair up, got 2 and 1"):
        paired_difference([1, 2], [1])
    with pytest.raises(ValueError, match="df must be an integer >= 1"):
        t_quantile_975(0)


def test_ablation_cells_grid_and_cross():
    from mn.analysis.ablation import cells_of
    from mn.analysis.trained import AnalysisError

    assert cells_of([1, 8], [2, 5]) == [(1, 2.0), (1, 5.0), (8, 2.0), (8, 5.0)]
    # the paper's layout: every S at gamma0 = 5, then the other gammas at S0 = 8
    assert cells_of([1, 8, 64], [1, 5, 25], cross=(8, 5)) == [(1, 5.0), (8, 5.0), (64, 5.0), (8, 1.0), (8, 25.0)]
    with pytest.raises(AnalysisError, match="S0 one of the entries"):
        cells_of([1, 8], [1, 5], cross=(16, 5))
    with pytest.raises(AnalysisError, match="gamma0 one of the gammas"):
        cells_of([1, 8], [1, 5], cross=(8, 10))
    with pytest.raises(AnalysisError, match="whole number of entries"):
        cells_of([1, 8], [1, 5], cross=(8.5, 5))
    with pytest.raises(AnalysisError, match="entries must be >= 1"):
        cells_of([0, 8], [1, 5])


def test_ablation_markdown_table():
    from mn.analysis.ablation import markdown

    record = {"metric": "test_accuracy", "seeds": [0, 1], "cells": [
        {"num_entries": 1, "gamma": 10.0, "values": [0.6, 0.64], "mean": 0.62, "std": 0.028284, "seconds": 12.4},
        {"num_entries": 64, "gamma": 2.5, "values": [0.98, 0.99], "mean": 0.985, "std": 0.007071, "seconds": 30.6}]}
    assert markdown(record).splitlines() == [
        "| S | gamma | test accuracy: mean ± std | per seed (0, 1) | seconds |",
        "| ---: | ---: | --- | --- | ---: |",
        "| 1 | 10 | 0.6200 ± 0.0283 | 0.6000, 0.6400 | 12 |",
        "| 64 | 2.5 | 0.9850 ± 0.0071 | 0.9800, 0.9900 | 31 |"]


def test_fig4_contrasts_pairs_cells_and_run_folders_by_seed(tmp_path, capsys):
    import importlib.util
    import json
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("fig4_contrasts",
                                                  Path(__file__).parents[1] / "bench" / "fig4_contrasts.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    record = {"dataset": "toy", "metric": "test_accuracy", "seeds": [3, 4], "cells": [
        {"num_entries": 10, "gamma": 2.5, "values": [0.70, 0.80]},
        {"num_entries": 1, "gamma": 2.5, "values": [0.60, 0.50]},
        {"num_entries": 1, "gamma": 0.001, "values": [0.40, 0.50]}],
        "settings": {"dataset": "toy", "split_seed": 0}}
    (tmp_path / "ablation.json").write_text(json.dumps(record))
    for seed, accuracy in ((3, 0.55), (4, 0.65)):                    # a run folder of mn train: epochs, then result
        (tmp_path / "ref" / f"seed{seed}").mkdir(parents=True)
        (tmp_path / "ref" / f"seed{seed}" / "metrics.jsonl").write_text(
            json.dumps({"epoch": 1, "val_accuracy": 0.1}) + "\n"
            + json.dumps({"event": "result", "test_accuracy": accuracy}))
    (tmp_path / "ref" / "config.json").write_text(json.dumps({"dataset": "toy", "split_seed": 0}))
    script.main(str(tmp_path / "ablation.json"), ["10:2.5-1:2.5", f"10:2.5-{tmp_path / 'ref'}", "1:1e-3-1:2.5"])
    rows = capsys.readouterr().out.splitlines()
    # differences 0.10, 0.30 -> mean 0.2, std 0.1414, half-width 12.706 * 0.1414 / sqrt(2) = 1.2706
    assert rows[2] == "| 10:2.5 − 1:2.5 | +0.2000 ± 0.1414 | [-1.0706, +1.4706] | +0.1000, +0.3000 |"
    # 0.70 - 0.55, 0.80 - 0.65: both 0.15
    assert rows[3].startswith(f"| 10:2.5 − {tmp_path / 'ref'} | +0.1500 ± 0.0000 | [+0.1500, +0.1500] |")
    # gamma written with an exponent: 0.40 - 0.60, 0.50 - 0.50
    assert rows[4] == "| 1:1e-3 − 1:2.5 | -0.1000 ± 0.1414 | [-1.3706, +1.1706] | -0.2000, +0.0000 |"
    (tmp_path / "ref" / "config.json").write_text(json.dumps({"dataset": "toy", "split_seed": 1}))
    with pytest.raises(SystemExit, match="split_seed 1, the sweep's is 0"):
        script.main(str(tmp_path / "ablation.json"), [f"10:2.5-{tmp_path / 'ref'}"])
    with pytest.raises(SystemExit, match="'10:2.5-': expected A-B"):      # an empty side is not the cwd
        script.main(str(tmp_path / "ablation.json"), ["10:2.5-"])
    (tmp_path / "one.json").write_text(json.dumps(dict(record, seeds=[3], cells=[
        {"num_entries": 10, "gamma": 2.5, "values": [0.70]}, {"num_entries": 1, "gamma": 2.5, "values": [0.60]}])))
    capsys.readouterr()
    script.main(str(tmp_path / "one.json"), ["10:2.5-1:2.5"])
    assert capsys.readouterr().out.splitlines()[2] == "| 10:2.5 − 1:2.5 | +0.1000 (one seed: no std) | – | +0.1000 |"
