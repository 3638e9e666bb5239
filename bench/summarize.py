"""Markdown table of a pytest-benchmark JSON: median ms per config and backend, and each backend's speedup over the
slowest one measured in the same run. Usage: python bench/summarize.py RESULTS.json"""
import json
import sys
from collections import defaultdict


def main(path: str) -> None:
    data = json.load(open(path))
    info = data["machine_info"]
    extra = data["benchmarks"][0]["extra_info"]
    print(f"- date: {data['datetime']}\n- machine: {info.get('cpu', {}).get('brand_raw', info['processor'])}, "
          f"{info.get('cpu', {}).get('count', '?')} cores; python {info['python_version']}, "
          f"torch {extra.get('torch', '?')}, {extra.get('threads', '?')} threads")
    by_cfg = defaultdict(dict)
    for b in data["benchmarks"]:
        by_cfg[b["group"]][b["extra_info"]["backend"]] = b["stats"]["median"] * 1e3
    print("\n| config | backend | median ms | speedup vs slowest |\n| --- | --- | --- | --- |")
    for cfg, rows in by_cfg.items():
        slowest = max(rows.values())
        for backend, ms in sorted(rows.items(), key=lambda kv: kv[1]):
            print(f"| {cfg} | {backend} | {ms:.1f} | {slowest / ms:.2f}x |")


if __name__ == "__main__":
    main(sys.argv[1])
