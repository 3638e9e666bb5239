"""`mn analyze`: each figure runs on a tiny trained checkpoint, writes a valid PNG (and GIF), and its JSON numbers
equal a direct computation from the checkpoint (full similarity matrices, the autograd reference, brute-force
kNN) -- not the analysis code's own helpers."""
import json
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import mn
from mn.analysis import ablation, cosine, entries, induction, toy
from mn.analysis.trained import AnalysisError
from mn.cli import main
from mn.data import DIGIT_GROUPS, FINE_OF, load_dataset, load_digits, prepare
from mn.training import load_trained, make_config, train

TINY = dict(epochs=1, lr_milestones=[], max_steps_per_epoch=2, progress=False)


def _train(out_dir, dataset, method, seed=0):
    train(make_config(flags=dict(dataset=dataset, method=method, seeds=[seed], out_dir=str(out_dir), **TINY)),
          log=lambda _: None)
    return out_dir / f"seed{seed}" / "best.pt"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {name: _train(root / name, *name.split("-"))
            for name in ("digits-mn", "digits-vanilla", "digits_coarse-mn", "digits_coarse-vanilla")}


@pytest.fixture(scope="module")
def two_groups(tmp_path_factory):
    """{method: [seed 0's, seed 1's best.pt]} of tiny runs on digits_2groups."""
    root = tmp_path_factory.mktemp("two_groups")
    return {method: [_train(root / method, "digits_2groups", method, seed=seed) for seed in (0, 1)]
            for method in ("mn", "vanilla")}


def assert_png(path, min_size=(100, 100)):
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] >= min_size[0] and image.size[1] >= min_size[1]


def check_figure(fig, name):
    """A figure a reader can read: each axes that plots data (not an image) has both axis labels, the figure has
    a legend, and every text (titles, labels, legends, ticks) lies inside the image."""
    from matplotlib.text import Text

    plotting = [ax for ax in fig.axes if ax.axison and not ax.images and (ax.lines or ax.collections or ax.patches)]
    assert plotting or all(ax.images or not ax.axison for ax in fig.axes), name
    for ax in plotting:
        assert ax.get_xlabel().strip() and ax.get_ylabel().strip(), f"{name}: axes without labels"
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert legends and all(len(legend.get_texts()) >= 2 for legend in legends), f"{name}: no legend"
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    drawn = fig.get_tightbbox(renderer)                   # inches: everything drawn, titles and legends included
    width, height = fig.get_size_inches()
    if not (drawn.x0 >= -0.01 and drawn.y0 >= -0.01 and drawn.x1 <= width + 0.01 and drawn.y1 <= height + 0.01):
        texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()
                 and not (fig.bbox.contains(*t.get_window_extent(renderer).min)
                          and fig.bbox.contains(*t.get_window_extent(renderer).max))]
        raise AssertionError(f"{name}: drawn over {drawn} beyond the {width} x {height} in image, e.g. "
                             f"{[t.get_text() for t in texts][:5]}")


@pytest.fixture
def saved_figures(monkeypatch):
    """Every matplotlib Figure saved to a file (and every GIF frame of the toy) while the test runs: [(name, fig)]."""
    from matplotlib.figure import Figure

    figures, savefig, frame = [], Figure.savefig, toy.rgb_frame

    def spy(self, path, *args, **kwargs):
        figures.append((Path(path).name, self))
        return savefig(self, path, *args, **kwargs)

    def spy_frame(fig, *args, **kwargs):
        figures.append((f"toy.gif frame {len(figures)}", fig))
        return frame(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    monkeypatch.setattr(toy, "rgb_frame", spy_frame)
    return figures


def test_every_figure_has_labelled_axes_a_legend_and_its_text_inside(checkpoints, two_groups, tmp_path,
                                                                      saved_figures):
    toy.learnable_neighbours(tmp_path, epochs=2, num_entries=8)
    cosine.cosine_shift(checkpoints["digits-mn"], tmp_path)
    entries.entry_neighbours(checkpoints["digits-mn"], tmp_path, k=5)
    entries.entry_neighbours(_train(tmp_path / "spirals", "spirals", "mn"), tmp_path / "spirals", entries=[0, 1], k=3)
    induction.induction(checkpoints["digits_coarse-mn"], checkpoints["digits_coarse-vanilla"], tmp_path)
    ablation.sweep(tmp_path, dataset="spirals", entries=[4, 16], gammas=[2.0, 4.0], seeds=[0, 1], epochs=1,
                   max_steps_per_epoch=1, log=lambda _: None)
    ablation.sweep(tmp_path / "cross", dataset="spirals", entries=[1, 4, 16], gammas=[2.0, 4.0], seeds=[0, 1],
                   cross=(4, 2.0), epochs=1, max_steps_per_epoch=1, log=lambda _: None)
    induction.induction(two_groups["mn"], two_groups["vanilla"], tmp_path / "pairs")
    names = [name for name, _ in saved_figures]
    assert {"toy.png", "cosine.png", "entries.png", "induction.png", "induction_retrievals.png", "ablation.png"} \
        <= set(names) and sum(n.startswith("toy.gif frame") for n in names) == 3
    for name, fig in saved_figures:
        check_figure(fig, name)
    toy_figure = dict(saved_figures)["toy.png"]
    legend = " ".join(t.get_text() for t in toy_figure.legends[0].get_texts())
    assert "predicted class 0" in legend and "predicted class 1" in legend, "the colours of the test points"
    assert "entry" in legend and "class 0" in legend and "path" in legend, "the crosses and their paths"


def test_digits_coarse_is_digits_grouped_in_pairs():
    fine, coarse = load_dataset("digits"), load_dataset("digits_coarse")
    assert torch.equal(fine.train.x, coarse.train.x) and torch.equal(fine.test.x, coarse.test.x)
    assert DIGIT_GROUPS == ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9)) and coarse.num_outputs == 5
    for split_fine, split_coarse in ((fine.train, coarse.train), (fine.test, coarse.test)):
        assert all(digit in DIGIT_GROUPS[group] for digit, group in zip(split_fine.y.tolist(), split_coarse.y.tolist()))


def test_digits_2groups_is_digits_in_two_halves_and_leaves_digits_coarse_alone():
    fine, halves, pairs = load_dataset("digits"), load_dataset("digits_2groups"), load_dataset("digits_coarse")
    assert FINE_OF["digits_2groups"] == "digits" and halves.num_outputs == 2 and halves.name == "digits_2groups"
    for split_fine, split_halves, split_pairs in ((fine.train, halves.train, pairs.train),
                                                  (fine.test, halves.test, pairs.test)):
        assert torch.equal(split_halves.x, split_fine.x)
        assert torch.equal(split_halves.y, (split_fine.y >= 5).long())          # 0-4 -> 0, 5-9 -> 1
        assert torch.equal(split_pairs.y, split_fine.y // 2)                    # digits_coarse unchanged
    assert make_config(flags=dict(dataset="digits_2groups")).backbone == "digits_cnn"
    with pytest.raises(ValueError, match="grouping must be None or one of digits_coarse, digits_2groups"):
        load_digits("digits_3groups")
    with pytest.raises(ValueError, match="grouping must be None or one of"):
        load_digits(True)                                                        # the old coarse=True spelling
    assert load_digits().name == "digits" and load_digits("digits_2groups").num_outputs == 2


def test_cosine_matches_the_autograd_inner_step(checkpoints, tmp_path):
    record = cosine.cosine_shift(checkpoints["digits-mn"], tmp_path)
    assert_png(tmp_path / "cosine.png")
    assert json.loads((tmp_path / "cosine.json").read_text()) == record
    _, data, model, _ = load_trained(checkpoints["digits-mn"])
    head = model.classifier.head
    with torch.no_grad():
        z = model.classifier.backbone(data.inputs(data.test.x))
    grad, _ = mn.inner_gradient(z, head.keys, head.values, head.weight, head.tau, gamma=head.gamma,
                                backend="autograd")
    phi = (head.weight - head.inner_lr.abs() * grad).detach()
    y = data.test.y
    before = F.cosine_similarity(z, head.weight[y].detach(), dim=1)
    after = F.cosine_similarity(z, phi[torch.arange(len(y)), y], dim=1)
    torch.testing.assert_close(torch.tensor(record["before"]), before, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.tensor(record["after"]), after, rtol=1e-5, atol=1e-6)
    assert record["samples"] == len(y) == 360
    assert record["share_above"] == pytest.approx((after > before).float().mean().item(), abs=2 / len(y))


def test_cosine_refuses_a_vanilla_checkpoint_and_unknown_splits(checkpoints, tmp_path):
    with pytest.raises(AnalysisError, match="holds a vanilla model"):
        cosine.cosine_shift(checkpoints["digits-vanilla"], tmp_path)
    with pytest.raises(AnalysisError, match="split must be 'test' or 'val', got 'train'"):
        cosine.cosine_shift(checkpoints["digits-mn"], tmp_path, split="train")


def test_entries_match_a_full_similarity_matrix(checkpoints, tmp_path):
    record = entries.entry_neighbours(checkpoints["digits-mn"], tmp_path, k=5)
    assert_png(tmp_path / "entries.png")
    _, data, model, _ = load_trained(checkpoints["digits-mn"])
    head = model.classifier.head
    with torch.no_grad():
        z = model.classifier.backbone(data.inputs(data.test.x))
        sim = F.normalize(head.keys, dim=1) @ F.normalize(z, dim=1).T                       # S x N_test
        classes = head.values.argmax(1)
    top = sim.topk(5, dim=1)
    nearest = top.indices
    share = (data.test.y[nearest] == classes[:, None]).float().mean(1)
    assert record["consistency"] == pytest.approx(share.mean().item(), abs=1e-6)
    values = head.values.detach()
    expected = [max((j for j in range(len(values)) if classes[j] == c), key=lambda j: values[j, c].item())
                for c in range(10) if (classes == c).any()]
    assert [r["entry"] for r in record["entries"]] == expected
    for row in record["entries"]:
        e = row["entry"]
        assert row["neighbours"] == nearest[e].tolist() and row["class"] == int(classes[e])
        torch.testing.assert_close(torch.tensor(row["attention_logits"]), head.gamma * top.values[e])
        assert row["neighbour_labels"] == data.test.y[nearest[e]].tolist()
        assert row["share_of_class"] == pytest.approx(share[e].item())


def test_entries_of_the_generic_layer_use_its_euclidean_attention(tmp_path):
    checkpoint = _train(tmp_path / "spirals", "spirals", "mn")
    record = entries.entry_neighbours(checkpoint, tmp_path, entries=[0, 5], k=4)
    assert_png(tmp_path / "entries.png")
    _, data, model, _ = load_trained(checkpoint)
    with torch.no_grad():
        distance = torch.cdist(model.net.keys[[0, 5]].double(), data.test.x.double())              # 2 x N
    nearest = distance.topk(4, dim=1, largest=False)
    for r, row in enumerate(record["entries"]):
        assert row["neighbours"] == nearest.indices[r].tolist()
        torch.testing.assert_close(torch.tensor(row["attention_logits"], dtype=torch.float64),
                                   -model.net.gamma * nearest.values[r], rtol=1e-5, atol=1e-5)


def test_entries_argument_errors(checkpoints, tmp_path):
    with pytest.raises(AnalysisError, match=r"entries must be indices in \[0, 500\)"):
        entries.entry_neighbours(checkpoints["digits-mn"], tmp_path, entries=[3, 500])
    with pytest.raises(AnalysisError, match="k must be in"):
        entries.entry_neighbours(checkpoints["digits-mn"], tmp_path, k=0)


def _brute_knn_accuracy(memory, labels, queries, truth, k):
    sim = F.normalize(queries, dim=1) @ F.normalize(memory, dim=1).T
    correct = 0
    for row, t in zip(sim.topk(k, dim=1).indices, truth):
        votes = labels[row].tolist()                     # nearest first
        counts = Counter(votes)
        top = max(counts.values())
        correct += next(v for v in votes if counts[v] == top) == int(t)     # a tie goes to the nearest
    return correct / len(truth)


def test_induction_matches_brute_force_knn(checkpoints, tmp_path):
    record = induction.induction(checkpoints["digits_coarse-mn"], checkpoints["digits_coarse-vanilla"], tmp_path, k=7)
    assert_png(tmp_path / "induction.png")
    assert_png(tmp_path / "induction_retrievals.png")
    fine = prepare(load_dataset("digits"), val_fraction=0.1)
    _, data, mn_model, _ = load_trained(checkpoints["digits_coarse-mn"])
    _, _, vanilla, _ = load_trained(checkpoints["digits_coarse-vanilla"])
    head = mn_model.classifier.head
    with torch.no_grad():
        def attention(x):
            z = mn_model.classifier.backbone(data.inputs(x))
            return torch.softmax(head.gamma * F.normalize(z, dim=1) @ F.normalize(head.keys, dim=1).T, dim=1)
        reps = {"mn": (attention(data.train.x), attention(data.test.x)),
                "vanilla": (vanilla.net[0](data.inputs(data.train.x)), vanilla.net[0](data.inputs(data.test.x)))}
    for name, (memory, queries) in reps.items():
        for level, split in (("coarse", data), ("fine", fine)):
            expected = _brute_knn_accuracy(memory, split.train.y, queries, split.test.y, 7)
            assert record["accuracy"][name][level] == pytest.approx(expected, abs=1e-6), (name, level)
    assert record["memory"] == len(data.train) and record["queries"] == 360


def test_induction_on_tabular_sets_compares_the_feature_mlp_outputs(tmp_path):
    """hierarchy_coarse -> hierarchy: vanilla's kNN runs on its mlp_small features (64-d), not on the 40 raw
    inputs; MN's on its attention vectors over the S entries."""
    mn_path, vanilla_path = (_train(tmp_path / m, "hierarchy_coarse", m) for m in ("mn", "vanilla"))
    record = induction.induction(mn_path, vanilla_path, tmp_path, k=5)
    assert record["fine_dataset"] == "hierarchy" and not (tmp_path / "induction_retrievals.png").exists()
    fine = prepare(load_dataset("hierarchy"), val_fraction=0.1)
    _, data, mn_model, _ = load_trained(mn_path)
    _, _, vanilla, _ = load_trained(vanilla_path)
    head = mn_model.classifier.head
    with torch.no_grad():
        def attention(x):
            z = mn_model.classifier.backbone(data.inputs(x))
            return torch.softmax(head.gamma * F.normalize(z, dim=1) @ F.normalize(head.keys, dim=1).T, dim=1)
        features = [vanilla.net[0](data.inputs(x)) for x in (data.train.x, data.test.x)]
        reps = {"mn": (attention(data.train.x), attention(data.test.x)), "vanilla": features}
    assert features[0].shape[1] == 64 != data.train.x.shape[1]
    for name, (memory, queries) in reps.items():
        for level, split in (("coarse", data), ("fine", fine)):
            expected = _brute_knn_accuracy(memory, split.train.y, queries, split.test.y, 5)
            assert record["accuracy"][name][level] == pytest.approx(expected, abs=1e-6), (name, level)


def test_induction_needs_coarse_mn_and_vanilla(checkpoints, tmp_path):
    with pytest.raises(AnalysisError, match="needs a coarse-labelled data set"):
        induction.induction(checkpoints["digits-mn"], checkpoints["digits-vanilla"], tmp_path)
    with pytest.raises(AnalysisError, match="expected 'vanilla'"):
        induction.induction(checkpoints["digits_coarse-mn"], checkpoints["digits_coarse-mn"], tmp_path)
    with pytest.raises(AnalysisError, match=r"k must be an integer in \[1, 1293\]"):
        induction.induction(checkpoints["digits_coarse-mn"], checkpoints["digits_coarse-vanilla"], tmp_path, k=0)


def test_induction_over_pairs_summarises_the_single_pairs(two_groups, tmp_path):
    record = induction.induction(two_groups["mn"], two_groups["vanilla"], tmp_path / "pairs", k=5)
    assert json.loads((tmp_path / "pairs" / "induction.json").read_text()) == record
    assert_png(tmp_path / "pairs" / "induction.png")
    singles = [induction.induction(m, v, tmp_path / f"single{i}", k=5)
               for i, (m, v) in enumerate(zip(two_groups["mn"], two_groups["vanilla"]))]
    assert record["dataset"] == "digits_2groups" and record["fine_dataset"] == "digits"
    assert [p["seeds"] for p in record["pairs"]] == [[0, 0], [1, 1]]
    assert [p["accuracy"] for p in record["pairs"]] == [s["accuracy"] for s in singles]
    for level in ("coarse", "fine"):
        for name in ("mn", "vanilla"):
            a, b = (s["accuracy"][name][level] for s in singles)
            assert record["accuracy"][name][level] == pytest.approx((a + b) / 2)
            assert record["summary"][name][level]["std"] == pytest.approx(abs(a - b) / 2 ** 0.5)
        d = [s["accuracy"]["mn"][level] - s["accuracy"]["vanilla"][level] for s in singles]
        diff = record["difference"][level]
        mean, std = (d[0] + d[1]) / 2, abs(d[0] - d[1]) / 2 ** 0.5
        assert diff["values"] == pytest.approx(d) and diff["mean"] == pytest.approx(mean)
        half = 12.706204736174698 * std / 2 ** 0.5                        # t_{0.975, 1} std / sqrt(n)
        assert diff["ci95"] == pytest.approx([mean - half, mean + half], abs=1e-12)
    assert singles[0]["difference"]["fine"]["ci95"] is None


def test_induction_pairs_must_pair_up_on_the_same_data(checkpoints, two_groups, tmp_path, capsys):
    with pytest.raises(AnalysisError, match=r"pair up by position: got 2 MN checkpoint\(s\) and 1 vanilla"):
        induction.induction(two_groups["mn"], two_groups["vanilla"][:1], tmp_path)
    with pytest.raises(AnalysisError, match="every pair must share the data and its split"):
        induction.induction([two_groups["mn"][0], checkpoints["digits_coarse-mn"]],
                            [two_groups["vanilla"][0], checkpoints["digits_coarse-vanilla"]], tmp_path)
    assert main(["analyze", "induction", "--checkpoint", *map(str, two_groups["mn"]), "--baseline",
                 str(two_groups["vanilla"][0]), "--out-dir", str(tmp_path)]) == 2
    assert "pair up by position" in capsys.readouterr().err
    assert main(["analyze", "induction", "--checkpoint", *map(str, two_groups["mn"]), "--baseline",
                 *map(str, two_groups["vanilla"]), "--out-dir", str(tmp_path), "-k", "5"]) == 0
    headline = json.loads(capsys.readouterr().out)
    stored = json.loads((tmp_path / "induction.json").read_text())
    assert headline["accuracy"] == stored["accuracy"]
    assert headline["difference"]["fine"]["ci95"] == stored["difference"]["fine"]["ci95"]


def test_toy_records_every_epoch_and_its_checkpoint_agrees(tmp_path):
    record = toy.learnable_neighbours(tmp_path, epochs=2, num_entries=8)
    assert_png(tmp_path / "toy.png")
    with Image.open(tmp_path / "toy.gif") as gif:
        assert gif.format == "GIF" and gif.n_frames == 3
    assert record["shown_epochs"] == [0, 1, 2] and len(record["entry_positions"]) == 3
    _, data, model, _ = load_trained(tmp_path / "toy-run" / "seed0" / "last.pt")
    with torch.no_grad():
        accuracy = (model(data.test.x)[0].argmax(1) == data.test.y).float().mean().item()
        assert record["entry_positions"][-1] == model.net.keys.tolist()
    assert record["test_accuracy_per_epoch"][-1] == pytest.approx(accuracy)
    assert record["entry_positions"][0] != record["entry_positions"][-1]        # the entries moved


def test_ablation_cells_are_the_training_runs(tmp_path):
    lines = []
    record = ablation.sweep(tmp_path, dataset="spirals", entries=[4, 16], gammas=[2.0], seeds=[0, 1], epochs=1,
                            max_steps_per_epoch=2, log=lines.append)
    assert len(lines) == 2 and lines[1].startswith("  S = 16, gamma = 2: test_accuracy")
    assert record["epochs"] == 1 and json.loads((tmp_path / "ablation.json").read_text()) == record
    assert_png(tmp_path / "ablation.png")
    assert record["metric"] == "test_accuracy" and [c["num_entries"] for c in record["cells"]] == [4, 16]
    direct = train(make_config(flags=dict(dataset="spirals", method="mn", num_entries=16, gamma=2.0, seeds=[0, 1],
                                          epochs=1, max_steps_per_epoch=2, progress=False)), log=lambda _: None)
    assert record["cells"][1]["values"] == [r["test_accuracy"] for r in direct["runs"]]
    assert record["cells"][1]["mean"] == pytest.approx(direct["summary"]["mean"])


def test_cli_ablation_cross_trains_the_paper_layout(tmp_path, capsys):
    assert main(["analyze", "ablation", "--dataset", "spirals", "--entries", "1", "4", "--gammas", "2", "4",
                 "--cross", "4", "2", "--seeds", "0", "--epochs", "1", "--out-dir", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "ablation.json").read_text())
    assert record["design"] == "cross" and record["cross"] == [4, 2.0] and record["settings"]["epochs"] == 1
    assert [(c["num_entries"], c["gamma"]) for c in record["cells"]] == [(1, 2.0), (4, 2.0), (4, 4.0)]
    assert all(c["seconds"] > 0 for c in record["cells"]) and "num_entries" not in record["settings"]
    assert len((tmp_path / "ablation.md").read_text().splitlines()) == 2 + 3
    assert [c["num_entries"] for c in json.loads(capsys.readouterr().out)["cells"]] == [1, 4, 4]


def test_cli_analyze_writes_files_and_reports_errors(checkpoints, tmp_path, capsys):
    assert main(["analyze", "cosine", "--checkpoint", str(checkpoints["digits-mn"]), "--out-dir", str(tmp_path)]) == 0
    headline = json.loads(capsys.readouterr().out)
    assert headline["share_above"] == json.loads((tmp_path / "cosine.json").read_text())["share_above"]
    assert main(["analyze", "entries", "--checkpoint", str(checkpoints["digits-vanilla"]),
                 "--out-dir", str(tmp_path)]) == 2
    assert "holds a vanilla model" in capsys.readouterr().err
    assert main(["analyze", "cosine", "--checkpoint", str(tmp_path / "nope.pt"), "--out-dir", str(tmp_path)]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_missing_matplotlib_is_a_clear_error(monkeypatch, tmp_path, checkpoints, capsys):
    monkeypatch.setitem(__import__("sys").modules, "matplotlib.figure", None)
    assert main(["analyze", "cosine", "--checkpoint", str(checkpoints["digits-mn"]), "--out-dir", str(tmp_path)]) == 2
    assert 'pip install "mn[analysis]"' in capsys.readouterr().err


def test_analyze_all_fast_writes_every_figure(tmp_path, capsys):
    assert main(["analyze", "all", "--fast", "--out-dir", str(tmp_path)]) == 0
    for name in ("toy", "cosine", "ablation", "entries", "induction", "induction_retrievals"):
        assert_png(tmp_path / f"{name}.png")
    assert (tmp_path / "toy.gif").exists()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary) >= {"toy", "cosine", "entries", "ablation", "induction"}


@pytest.mark.gpu
def test_figures_on_cuda_agree_with_cpu(checkpoints, tmp_path):
    """The analyses move models, features and labels to the device they are given."""
    cpu = cosine.cosine_shift(checkpoints["digits-mn"], tmp_path / "cpu")
    gpu = cosine.cosine_shift(checkpoints["digits-mn"], tmp_path / "gpu", device="cuda")
    torch.testing.assert_close(torch.tensor(gpu["after"]), torch.tensor(cpu["after"]), rtol=1e-3, atol=1e-3)
    cpu = entries.entry_neighbours(checkpoints["digits-mn"], tmp_path / "cpu")
    gpu = entries.entry_neighbours(checkpoints["digits-mn"], tmp_path / "gpu", device="cuda")
    assert gpu["consistency"] == pytest.approx(cpu["consistency"], abs=0.01)
    pair = checkpoints["digits_coarse-mn"], checkpoints["digits_coarse-vanilla"]
    cpu = induction.induction(*pair, tmp_path / "cpu")["accuracy"]
    gpu = induction.induction(*pair, tmp_path / "gpu", device="cuda")["accuracy"]
    for name in ("mn", "vanilla"):
        for level in ("coarse", "fine"):
            assert gpu[name][level] == pytest.approx(cpu[name][level], abs=0.01)
    assert_png(tmp_path / "gpu" / "induction_retrievals.png")
