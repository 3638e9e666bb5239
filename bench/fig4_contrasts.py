"""Paired contrasts between cells of an `mn analyze ablation` sweep (Fig. 4), seed by seed, with the 95% t-interval
of mn.analysis.stats.paired_difference. Usage:

  python bench/fig4_contrasts.py ABLATION.json A-B [A-B ...]

A and B: a cell "S:GAMMA" of the sweep (GAMMA may be written 1e-3), or a run folder of `mn train` on the same data
set, split and seeds (its seed<s>/metrics.jsonl result lines: a reference such as the vanilla model). One Markdown
table row per contrast."""
import json
import re
import sys
from pathlib import Path

from mn.analysis.stats import paired_difference


def values(record: dict, term: str) -> list[float]:
    """Per-seed test metric of a cell "S:GAMMA", or of a run folder, in the order of the sweep's seeds."""
    if Path(term).is_dir():
        check_run_folder(record, Path(term))
        out = []
        for seed in record["seeds"]:
            lines = (Path(term) / f"seed{seed}" / "metrics.jsonl").read_text().splitlines()
            result = [json.loads(line) for line in lines if json.loads(line).get("event") == "result"]
            if len(result) != 1:
                raise SystemExit(f"{term}/seed{seed}: expected one result line, found {len(result)}")
            out.append(result[0][record["metric"]])
        return out
    S, gamma = term.split(":")
    for cell in record["cells"]:
        if cell["num_entries"] == int(S) and cell["gamma"] == float(gamma):
            return cell["values"]
    raise SystemExit(f"no cell S = {S}, gamma = {gamma} in the sweep")


CELL = re.compile(r"\d+:[0-9.]+(?:[eE][-+]?\d+)?")


def check_run_folder(record: dict, folder: Path) -> None:
    """A run folder is only comparable trained on the sweep's data set and split."""
    if not (folder / "config.json").is_file():
        raise SystemExit(f"{folder}: no config.json, not a run folder of mn train")
    config = json.loads((folder / "config.json").read_text())
    settings = record.get("settings", {"dataset": record["dataset"]})
    for key in ("dataset", "split_seed", "val_fraction", "folds", "fold"):
        if key in settings and config.get(key) != settings[key]:
            raise SystemExit(f"{folder}: {key} {config.get(key)!r}, the sweep's is {settings[key]!r}")


def split_contrast(contrast: str) -> tuple[str, str]:
    """ "A-B" at the first '-' where both sides are a cell or an existing run folder ('' is neither)."""
    for k, char in enumerate(contrast):
        a, b = contrast[:k], contrast[k + 1:]
        if char == "-" and all(t and (CELL.fullmatch(t) or Path(t).is_dir()) for t in (a, b)):
            return a, b
    raise SystemExit(f"{contrast!r}: expected A-B, each a cell S:GAMMA or a run folder")


def main(path: str, contrasts: list[str]) -> None:
    record = json.loads(Path(path).read_text())
    print(f"| {record['dataset']}: contrast | difference of {record['metric']} (mean ± std) | 95% CI | per seed "
          f"{tuple(record['seeds'])} |\n| --- | --- | --- | --- |")
    for contrast in contrasts:
        a, b = split_contrast(contrast)
        d = paired_difference(values(record, a), values(record, b))
        spread = " (one seed: no std) | –" if d["std"] is None else \
            f" ± {d['std']:.4f} | [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]"
        print(f"| {a} − {b} | {d['mean']:+.4f}{spread} | {', '.join(f'{v:+.4f}' for v in d['values'])} |")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2:])
