"""The paper's Table 1 protocol on data that ships or is generated (issue 16): on each data set, the four vanilla
baselines (dot / cosine output layer x SGD / AdamW), MAXL (Table 1's last column; training/maxl.py, its own
defaults), MN (ft:1 / ft:3 inner steps x scalar / diagonal inner rate) and a capacity-matched vanilla (a wider
backbone with at least as many parameters as MN's backbone + dictionary + heads; the four vanilla heads), all
on the same backbone, splits and seeds, trained with `mn train`'s own system (`mn.training.make_config` +
`train`, every setting the data set's default unless the row sets it).

Writes JSON after every finished run: every run's test and validation accuracy, best epoch, wall and CPU seconds
and settings; per data set the parameter counts and test examples; per invocation its command, commit, versions,
machine, loads and time. An interrupted bench resumes where it stopped (runs already in the JSON are skipped;
runs of a row with other settings are refused before training). Then Markdown (and a summary JSON): per data set
each method's mean ± sample std over seeds, and for each MN variant the paired difference to the best vanilla, to
MAXL and to the best capacity-matched vanilla (same seed = same split, same backbone initialisation and batch
order), mean with its 95% t-interval over seeds.

    OMP_NUM_THREADS=1 python bench/paper_claims.py --workers 2          # the committed run, seeds 0-4
    python bench/paper_claims.py --report-only                          # Markdown again from the JSON
    python bench/paper_claims.py --datasets digits --seeds 0 --epochs 1 --max-steps-per-epoch 2 \\
        --json /tmp/smoke.json --md /tmp/smoke.md                        # smoke test, seconds
    python bench/paper_claims.py --datasets mixture --epochs 150 --lr-milestones 120 --methods "vanilla dot-sgd" \\
        ... --json bench/results/paper-claims-mixture150.json --md ...   # a longer schedule for some rows

Each run is one process-pool task with one thread (OMP_NUM_THREADS=1, torch.set_num_threads(1)), so its numbers
do not depend on how many run beside it; --workers only sets how many run at once.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DATASETS = ("mnist5k", "mixture", "digits")
WIDE_OF = {"mnist5k": "mnist_cnn_wide", "digits": "digits_cnn_wide", "mixture": "mlp_wide"}
VANILLA = {
    "vanilla dot-sgd": dict(method="vanilla", classifier="dot", optimizer="sgd"),
    "vanilla dot-adamw": dict(method="vanilla", classifier="dot", optimizer="adamw"),
    "vanilla cos-sgd": dict(method="vanilla", classifier="cosine", optimizer="sgd"),
    "vanilla cos-adamw": dict(method="vanilla", classifier="cosine", optimizer="adamw"),
}
MAXL = {"MAXL": dict(method="maxl")}
MN = {
    "MN ft:1+S": dict(method="mn", inner_steps=1, inner_lr="scalar"),
    "MN ft:1+D": dict(method="mn", inner_steps=1, inner_lr="diagonal"),
    "MN ft:3+S": dict(method="mn", inner_steps=3, inner_lr="scalar"),
    "MN ft:3+D": dict(method="mn", inner_steps=3, inner_lr="diagonal"),
}
WIDE = {name.replace("vanilla", "wide"): flags for name, flags in VANILLA.items()}    # the same four heads
DIFFERENCE_KEYS = ("best_vanilla", "maxl", "best_wide")     # what each MN row is paired with


def methods(dataset: str) -> dict[str, dict]:
    """Row name -> the flags that define it (on top of the data set's defaults)."""
    wide = {name: dict(flags, backbone=WIDE_OF[dataset]) for name, flags in WIDE.items()}
    return {**VANILLA, **MAXL, **MN, **wide}


# -- running ------------------------------------------------------------------------------------------------------
def _init_worker() -> None:
    import torch
    torch.set_num_threads(1)


def make_run_config(dataset: str, flags: dict, seed: int, overrides: dict):
    from mn.training import make_config
    return make_config(flags=dict(dataset=dataset, seeds=[seed], progress=False, device="cpu", **flags, **overrides))


def settings(cfg) -> dict:
    """The settings a run records, and that runs of one row must share."""
    return {k: getattr(cfg, k) for k in ("backbone", "method", "classifier", "optimizer", "lr", "weight_decay",
                                         "epochs", "lr_milestones", "num_entries", "gamma", "inner_steps",
                                         "inner_lr", "entry_dropout")}


def run_one(dataset: str, name: str, flags: dict, seed: int, overrides: dict) -> dict:
    """One (data set, method, seed) run with mn train's system; its result and times."""
    from mn.training import train
    from mn.training.console import Console

    cfg = make_run_config(dataset, flags, seed, overrides)
    wall, cpu = time.perf_counter(), time.process_time()
    result = train(cfg, log=lambda _: None, console=Console(bars=False))
    run = result["runs"][0]
    return {"dataset": dataset, "method": name, "seed": seed, "test_accuracy": run["test_accuracy"],
            "val_accuracy": run["val_accuracy"], "best_epoch": run["best_epoch"], "epochs": run["epochs"],
            "wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu, "config": settings(cfg)}


def run_pool(tasks: list[tuple], workers: int, fn, on_result, initializer=None) -> None:
    """fn(*task) for every task, `workers` at a time in spawned processes, on_result(task, result) as each ends.
    At most `workers` tasks are ever handed to the pool, so on a failure or Ctrl-C nothing more starts: the runs
    in flight finish and are passed on, then the error is raised."""
    pending = list(reversed(tasks))
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=initializer) as pool:
        running, failure = {}, None
        while running or (pending and failure is None):
            while pending and failure is None and len(running) < workers:
                task = pending.pop()
                running[pool.submit(fn, *task)] = task
            try:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
            except KeyboardInterrupt as interrupt:
                failure = failure or interrupt
                print(f"interrupted: waiting for the {len(running)} runs in flight", file=sys.stderr, flush=True)
                continue
            for future in done:
                task = running.pop(future)
                try:
                    result = future.result()
                except Exception as error:              # noqa: BLE001 -- raised below, after the runs in flight
                    print(f"{task[:2] + task[3:4]} failed: {error!r}", file=sys.stderr, flush=True)
                    failure = failure or error
                    continue
                on_result(task, result)
    if failure is not None:
        raise failure


def commit() -> str | None:
    """The checkout's commit, with -dirty when its code (not bench/results) differs from it; None outside git."""
    def git(*args):
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=30).stdout
    try:
        head = git("rev-parse", "--short=12", "HEAD").strip()
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", "python", "csrc", "mn_kernels", "bench",
                    "setup.py", ":(exclude)bench/results").strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + ("-dirty" if dirty else "")) or None


def data_facts(dataset: str) -> tuple[dict[str, int], int]:
    """Parameters of every row's model on the data set (built once, no training), and its test examples."""
    from mn.data import load_dataset, prepare
    from mn.training import build_model, make_config

    data = prepare(load_dataset(dataset))
    counts = {name: sum(p.numel() for p in build_model(make_config(flags=dict(dataset=dataset, **flags)), data)
                        .parameters()) for name, flags in methods(dataset).items()}
    return counts, len(data.test)


def environment() -> dict:
    import numpy
    import sklearn
    import torch

    try:
        from importlib.metadata import version
        mlxtend = version("mlxtend")
    except Exception:            # noqa: BLE001 -- not installed: say so
        mlxtend = None
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
            "scikit-learn": sklearn.__version__, "mlxtend": mlxtend, "cpu": cpu, "cores": os.cpu_count(),
            "threads_per_run": int(os.environ.get("OMP_NUM_THREADS", "1")), "platform": platform.platform()}


def load(path: Path) -> dict:
    """The JSON's record; one written before invocations were kept gets its single header as one invocation."""
    record = json.loads(path.read_text()) if path.exists() else {"runs": []}
    if "command" in record:             # an interrupted run wrote no end load and no total time
        record["invocations"] = [{"command": record.pop("command"), "commit": None,
                                  "environment": record.pop("environment"),
                                  "load_average_start": record.pop("load_average_start"),
                                  "load_average_end": record.pop("load_average_end", None),
                                  "wall_s": record.pop("total_wall_s", None), "runs": None,
                                  "merged": "possibly several invocations' runs under the last one's header"}]
    return record


def save(record: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(path)


def bench(args) -> dict:
    path = Path(args.json)
    record = load(path)
    overrides = {k: v for k, v in (("epochs", args.epochs), ("max_steps_per_epoch", args.max_steps_per_epoch),
                                   ("lr_milestones", args.lr_milestones)) if v is not None}
    if record.get("overrides", overrides) != overrides:
        sys.exit(f"{path} holds runs with overrides {record.get('overrides')}, not {overrides}: pass another --json")
    record["overrides"] = overrides
    for dataset in args.datasets:
        counts, test_examples = data_facts(dataset)
        record.setdefault("parameters", {})[dataset] = counts
        record.setdefault("test_examples", {})[dataset] = test_examples
        print(f"{dataset}: parameters " + ", ".join(f"{k} {v:,}" for k, v in counts.items()), flush=True)
    done = {(r["dataset"], r["method"], r["seed"]) for r in record["runs"]}
    # MNIST's first and the inner-step-3 runs first: the long ones start early so the pool ends evenly.
    order = {"mnist5k": 0, "digits": 1, "mixture": 2}
    tasks = [(d, name, flags, s, overrides) for d in args.datasets for name, flags in methods(d).items()
             for s in args.seeds if (d, name, s) not in done and (args.methods is None or name in args.methods)]
    tasks.sort(key=lambda t: (order.get(t[0], 3), t[2].get("inner_steps", 1) != 3, t[3]))
    refuse_other_settings(record, tasks)
    print(f"{len(tasks)} runs to do ({len(done)} already in {path}), {args.workers} at a time", flush=True)
    if not tasks:
        return record
    invocation = {"command": " ".join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]]), "commit": commit(),
                  "environment": environment(), "load_average_start": os.getloadavg(), "runs": 0}
    record.setdefault("invocations", []).append(invocation)
    start = time.perf_counter()

    def keep(task, run):
        record["runs"].append(run)
        invocation["runs"] += 1
        save(record, path)
        print(f"[{invocation['runs']}/{len(tasks)} {time.perf_counter() - start:7.0f} s] {run['dataset']} "
              f"{run['method']} seed {run['seed']}: test {run['test_accuracy']:.4f} val {run['val_accuracy']:.4f} "
              f"({run['wall_s']:.0f} s wall, {run['cpu_s']:.0f} s cpu; load {os.getloadavg()[0]:.1f})", flush=True)

    try:
        run_pool(tasks, args.workers, run_one, keep, initializer=_init_worker)
    finally:
        invocation.update(wall_s=time.perf_counter() - start, load_average_end=os.getloadavg())
        save(record, path)
    return record


def refuse_other_settings(record: dict, tasks: list[tuple]) -> None:
    """Before training: a planned run whose settings differ from its row's runs already in the record (another
    mn, another default) would mix two experiments under one row."""
    for dataset, name, flags, seed, overrides in tasks:
        kept = [r["config"] for r in record["runs"] if r["dataset"] == dataset and r["method"] == name]
        planned = json.loads(json.dumps(settings(make_run_config(dataset, flags, seed, overrides))))
        if kept and kept[0] != planned:
            differing = sorted(k for k in planned if kept[0].get(k) != planned[k])
            sys.exit(f"{dataset} {name}: the runs in the record have other settings ({', '.join(differing)}) than "
                     "this mn gives: pass another --json")


# -- reporting ----------------------------------------------------------------------------------------------------
def summarise(record: dict) -> dict:
    """Per data set: each method's per-seed accuracies, mean, std; the best vanilla and best wide row (by mean test
    accuracy over the seeds all rows of the group share, which favours the baselines); each MN row's paired
    differences to those and to MAXL. Refuses runs of one row whose settings differ."""
    from mn.analysis import stats

    out = {}
    for dataset in dict.fromkeys(r["dataset"] for r in record["runs"]):
        runs = [r for r in record["runs"] if r["dataset"] == dataset]
        for name in dict.fromkeys(r["method"] for r in runs):
            configs = {json.dumps(r["config"], sort_keys=True) for r in runs if r["method"] == name}
            if len(configs) > 1:
                sys.exit(f"{dataset} {name}: runs with different settings in one record: {sorted(configs)}")
        seeds = sorted({r["seed"] for r in runs})
        rows = {}
        for name in methods(dataset):
            by_seed = {r["seed"]: r for r in runs if r["method"] == name}
            if not by_seed:
                continue
            acc = [by_seed[s]["test_accuracy"] for s in seeds if s in by_seed]
            spread = stats.summary(acc)
            rows[name] = {"seeds": [s for s in seeds if s in by_seed], "test_accuracy": acc,
                          "mean": spread["mean"], "std": spread["std"],
                          "wall_s": [by_seed[s]["wall_s"] for s in seeds if s in by_seed],
                          "best_epoch": [by_seed[s]["best_epoch"] for s in seeds if s in by_seed]}
        summary = {"seeds": seeds, "rows": rows, "differences": {}}
        for group, key in ((VANILLA, "best_vanilla"), (MAXL, "maxl"), (WIDE, "best_wide")):
            names = [n for n in group if n in rows]
            if not names:
                continue
            shared = set.intersection(*(set(rows[n]["seeds"]) for n in names))
            if not shared:
                sys.exit(f"{dataset}: the rows {', '.join(names)} share no seed, so none can be chosen as the best: "
                         "run the missing seeds")
            summary[key] = max(names, key=lambda n: statistics.fmean(
                a for sd, a in zip(rows[n]["seeds"], rows[n]["test_accuracy"]) if sd in shared))
        for name in MN:
            if name not in rows:
                continue
            summary["differences"][name] = {}
            for key in DIFFERENCE_KEYS:
                base = summary.get(key)
                common = [s for s in rows[name]["seeds"] if base and s in rows[base]["seeds"]]
                if len(common) >= 1:
                    a = [rows[name]["test_accuracy"][rows[name]["seeds"].index(s)] for s in common]
                    b = [rows[base]["test_accuracy"][rows[base]["seeds"].index(s)] for s in common]
                    summary["differences"][name][key] = {"against": base, "seeds": common,
                                                         **stats.paired_difference(a, b)}
        out[dataset] = summary
    return out


def _pct(x: float) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def _interval(d: dict | None) -> str:
    if d is None:
        return "–"
    if d["n"] < 2:
        return f"{100 * d['mean']:+.2f}, no interval (n = 1) vs {d['against']}"
    low, high = (100 * x for x in d["ci95"])
    return f"{100 * d['mean']:+.2f} [{low:+.2f}, {high:+.2f}] vs {d['against']}, n = {d['n']}"


def _invocation(k: int, inv: dict) -> str:
    env = inv["environment"]
    end = inv.get("load_average_end")
    return (f"{k}. `OMP_NUM_THREADS=1 python {inv['command']}` at {inv.get('commit') or 'commit not recorded'}"
            + (f" ({inv['merged']})" if inv.get("merged") else "")
            + f": {env['date']}; {env['cpu']}, {env['cores']} cores shared with other jobs (load average "
            f"{inv['load_average_start'][0]:.1f} at the start, "
            + (f"{end[0]:.1f} at the end" if end else "run cut short") + "), one thread per run; python "
            f"{env['python']}, torch {env['torch']}, numpy {env['numpy']}, scikit-learn {env['scikit-learn']}, "
            f"mlxtend {env['mlxtend']}; "
            + (f"{inv['runs']} runs, " if inv.get("runs") is not None else "")
            + (f"{inv['wall_s'] / 60:.1f} min." if inv.get("wall_s") is not None else "wall time not recorded."))


def markdown(record: dict, summary: dict) -> str:
    lines = ["# Table 1's protocol on data that ships (generated by bench/paper_claims.py)", "",
             "Invocations that wrote these runs (each resumes the JSON: runs already in it are kept)"
             + (f"; overrides {record['overrides']}" if record["overrides"] else "") + ":", "",
             *(_invocation(k, inv) for k, inv in enumerate(record["invocations"], 1)), "",
             "Test accuracy in %, mean ± sample std over seeds (each seed: one initialisation and batch order; the "
             "splits are fixed, so the spread leaves out the test set's sampling error). Best vanilla / best wide: "
             "the row with the highest mean test accuracy among the four vanilla rows / the four capacity-matched "
             "rows, over the seeds they all have (chosen on test, which favours the baseline). MAXL's parameters "
             "include its label generator (a second backbone, used in training only). Paired difference: MN - that "
             "row, seed by seed, mean [95% t-interval], with no correction for the "
             f"{len(MN) * len(DIFFERENCE_KEYS)} comparisons per data set.", ""]
    for dataset, s in summary.items():
        params = record["parameters"].get(dataset, {})
        cfg = next(r["config"] for r in record["runs"] if r["dataset"] == dataset and r["method"] == "MN ft:1+S") \
            if any(r["dataset"] == dataset and r["method"] == "MN ft:1+S" for r in record["runs"]) else None
        lines += [f"## {dataset}", ""]
        if cfg:
            lines += [f"Backbone {cfg['backbone']} (wide: {WIDE_OF[dataset]}), {cfg['epochs']} epochs (rate x0.1 at "
                      f"{cfg['lr_milestones']}), S = {cfg['num_entries']}, gamma = {cfg['gamma']}, entry dropout "
                      f"{cfg['entry_dropout']}; seeds {s['seeds']}.", ""]
        if dataset in record.get("test_examples", {}):
            n_test = record["test_examples"][dataset]
            lines += [f"{n_test} test examples: one is {100 / n_test:.2f} points, the step of every accuracy "
                      "and difference below.", ""]
        lines += ["| method | test accuracy (%) | per seed | parameters | wall s per run |",
                  "| --- | --- | --- | --- | --- |"]
        for name, row in s["rows"].items():
            mark = " (best vanilla)" if name == s.get("best_vanilla") else (
                " (best wide)" if name == s.get("best_wide") else "")
            lines.append(f"| {name}{mark} | {_pct(row['mean'])} ± {_pct(row['std'])} | "
                         f"{', '.join(_pct(a) for a in row['test_accuracy'])} | {params.get(name, 0):,} | "
                         f"{statistics.fmean(row['wall_s']):.0f} |")
        lines += ["", "| MN variant | - best vanilla (points) | - MAXL (points) | - best wide (points) |",
                  "| --- | --- | --- | --- |"]
        for name, diffs in s["differences"].items():
            lines.append(f"| {name} | {' | '.join(_interval(diffs.get(key)) for key in DIFFERENCE_KEYS)} |")
        lines.append("")
    lines += ["Wall time per data set (all its runs, summed over the workers): " + ", ".join(
        f"{d} {sum(r['wall_s'] for r in record['runs'] if r['dataset'] == d) / 60:.1f} min" for d in summary) + ".",
        ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--workers", type=int, default=2, help="runs at once, one thread each (default 2)")
    parser.add_argument("--json", default=str(RESULTS / "paper-claims-table1.json"))
    parser.add_argument("--md", default=str(RESULTS / "paper-claims-table1.md"))
    parser.add_argument("--epochs", type=int, default=None, help="override every data set's epochs (smoke tests)")
    parser.add_argument("--max-steps-per-epoch", type=int, default=None, help="cap (smoke tests)")
    parser.add_argument("--lr-milestones", type=int, nargs="*", default=None,
                        help="override every data set's learning-rate milestones (with --epochs)")
    parser.add_argument("--methods", nargs="+", default=None, choices=[*VANILLA, *MAXL, *MN, *WIDE],
                        help="only these rows (default: all)")
    parser.add_argument("--report-only", action="store_true", help="write the Markdown from the JSON, train nothing")
    args = parser.parse_args(argv)
    record = load(Path(args.json)) if args.report_only else bench(args)
    if not record["runs"]:
        sys.exit(f"no runs in {args.json}")
    summary = summarise(record)
    text = markdown(record, summary)
    Path(args.md).write_text(text)
    Path(args.json).with_name(Path(args.json).stem + "-summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
