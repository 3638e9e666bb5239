"""Paired contrasts between cells of an `mn analyze ablation` sweep (Fig. 4), seed by seed, with the 95% t-interval
of mn.analysis.stats.paired_difference. Usage:

  python bench/fig4_contrasts.py ABLATION.json A-B [A-B ...]

A and B: a cell "S:GAMMA" of the sweep, or a run folder of `mn train` on the same data set and seeds (its
seed<s>/metrics.jsonl result lines: a reference such as the vanilla model). One Markdown table row per contrast."""
import json
import sys
from pathlib import Path

from mn.analysis.stats import paired_difference


def values(record: dict, term: str) -> list[float]:
    """Per-seed test metric of a cell "S:GAMMA", or of a run folder, in the order of the sweep's seeds."""
    if Path(term).is_dir():
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


def main(path: str, contrasts: list[str]) -> None:
    record = json.loads(Path(path).read_text())
    print(f"| {record['dataset']}: contrast | difference of {record['metric']} (mean ± std) | 95% CI | per seed "
          f"{tuple(record['seeds'])} |\n| --- | --- | --- | --- |")
    for contrast in contrasts:
        a, b = contrast.split("-", 1) if ":" in contrast.split("-", 1)[0] else contrast.rsplit("-", 1)
        d = paired_difference(values(record, a), values(record, b))
        print(f"| {a} − {b} | {d['mean']:+.4f} ± {d['std']:.4f} | [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}] | "
              f"{', '.join(f'{v:+.4f}' for v in d['values'])} |")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2:])
