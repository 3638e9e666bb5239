"""Summaries over seeds for the analyses: mean ± sample std, and the paired difference of two methods measured on
the same seeds with its 95% t-interval (Student's t with n - 1 degrees of freedom on the per-seed differences)."""
from __future__ import annotations

import math
import statistics


def t_quantile_975(df: int) -> float:
    """The 0.975 quantile of Student's t with `df` >= 1 degrees of freedom (scipy, which scikit-learn brings)."""
    from scipy.stats import t

    if isinstance(df, bool) or not isinstance(df, int) or df < 1:
        raise ValueError(f"df must be an integer >= 1, got {df!r}")
    return float(t.ppf(0.975, df))


def summary(values) -> dict:
    """{values, n, mean, std}: std is the sample standard deviation, None for a single value."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("summary needs at least one value")
    return {"values": values, "n": len(values), "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else None}


def paired_difference(a, b) -> dict:
    """a - b per pair (e.g. per seed): {values, n, mean, std, ci95: [low, high]}; std and ci95 are None for one
    pair. The interval is mean ± t_{0.975, n-1} std / sqrt(n)."""
    a, b = list(a), list(b)
    if len(a) != len(b):
        raise ValueError(f"a and b must pair up, got {len(a)} and {len(b)} values")
    out = summary([x - y for x, y in zip(a, b)])
    if out["std"] is None:
        out["ci95"] = None
    else:
        half = t_quantile_975(out["n"] - 1) * out["std"] / math.sqrt(out["n"])
        out["ci95"] = [out["mean"] - half, out["mean"] + half]
    return out
