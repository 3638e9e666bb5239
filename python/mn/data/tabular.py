"""The paper's five UCI regression sets (Table 2) and any CSV file, as regression data for k-fold CV.

Each file is numeric, comma separated, in the form the UCI repository distributes it, under the data directory:
  music  YearPredictionMSD.txt                       no header; column 0 the year, then 90 features
  toms   TomsHardware.data                           no header; 96 features, then the target
  cte    slice_localization_data.csv                 header; patientId, 384 features, reference (target)
  super  superconduct/train.csv (or train.csv)       header; 81 features, critical_temp (target)
  gom    default_plus_chromatic_features_1059_tracks.txt   no header; 116 features, latitude, longitude
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .base import DataFormatError, Split, TaskData, require

_UCI = "https://archive.ics.uci.edu/dataset/"


@dataclass(frozen=True)
class UciSpec:
    files: tuple[str, ...]          # accepted paths relative to the data directory, first found wins
    header: bool
    features: slice
    targets: slice
    page: str


UCI_SETS = {
    "music": UciSpec(("YearPredictionMSD.txt",), False, slice(1, 91), slice(0, 1), _UCI + "203"),
    "toms": UciSpec(("TomsHardware.data", "regression/TomsHardware/TomsHardware.data"), False, slice(0, 96),
                    slice(96, 97), _UCI + "248 (Buzz in social media; regression/TomsHardware)"),
    "cte": UciSpec(("slice_localization_data.csv",), True, slice(1, 385), slice(385, 386), _UCI + "206"),
    "super": UciSpec(("superconduct/train.csv", "train.csv"), True, slice(0, 81), slice(81, 82), _UCI + "464"),
    "gom": UciSpec(("default_plus_chromatic_features_1059_tracks.txt",
                    "Geographical Original of Music/default_plus_chromatic_features_1059_tracks.txt"),
                   False, slice(0, 116), slice(116, 118), _UCI + "315"),
}


def read_numeric_csv(path: Path, *, header: bool | None = None) -> np.ndarray:
    """A comma-separated numeric table -> (rows, columns) float64. header=None: skipped if the first line is
    not numeric."""
    try:
        with open(path, encoding="utf-8") as f:
            first = f.readline()
        if header is None:
            try:
                [float(v) for v in first.split(",")]
                header = False
            except ValueError:
                header = True
        table = np.loadtxt(path, delimiter=",", skiprows=int(header), dtype=np.float64, ndmin=2)
    except (ValueError, UnicodeDecodeError) as e:
        raise DataFormatError(f"{path} is not a numeric comma-separated table ({e})") from e
    if table.size == 0:
        raise DataFormatError(f"{path} holds no data rows")
    if not np.isfinite(table).all():
        raise DataFormatError(f"{path} contains NaN or Inf values")
    return table


def _as_task(name: str, table: np.ndarray, features, targets, path: Path) -> TaskData:
    x, y = table[:, features], table[:, targets]
    if x.shape[1] == 0 or y.shape[1] == 0:
        raise DataFormatError(f"{path}: {table.shape[1]} columns is too few for the expected features and target")
    largest, limit = float(np.abs(table).max()), float(np.finfo(np.float32).max)
    if largest > limit:          # would turn into inf in float32, and into NaN when standardised
        raise DataFormatError(f"{path}: values up to {largest:.3g} overflow float32 (largest {limit:.3g}); "
                              f"rescale the columns")
    split = Split(torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32))
    return TaskData(name, "regression", "tabular", split, None, num_outputs=y.shape[1], source=path)


def load_uci(name: str, root: Path) -> TaskData:
    """One of the paper's UCI regression sets by name (music, toms, cte, super, gom)."""
    if name not in UCI_SETS:
        raise ValueError(f"name must be one of {', '.join(map(repr, UCI_SETS))}, got {name!r}")
    spec = UCI_SETS[name]
    candidates = [Path(root) / f for f in spec.files]
    path = next((p for p in candidates if p.exists()), candidates[0])
    require(path, f"UCI set {name!r}", f"Download it from {spec.page} and place the file there")
    table = read_numeric_csv(path, header=spec.header)
    need = max(spec.features.stop, spec.targets.stop)
    if table.shape[1] != need:
        raise DataFormatError(f"{path}: expected {need} columns for {name!r}, got {table.shape[1]}")
    return _as_task(name, table, spec.features, spec.targets, path)


def load_csv(path: Path, *, target_columns: int = 1) -> TaskData:
    """Any numeric CSV as a regression set: the last `target_columns` columns are the targets."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"CSV file not found: {path}")
    if isinstance(target_columns, bool) or not isinstance(target_columns, int) or target_columns < 1:
        raise ValueError(f"target_columns must be a positive integer, got {target_columns!r}")
    table = read_numeric_csv(path)
    if table.shape[1] <= target_columns:
        raise DataFormatError(f"{path}: {table.shape[1]} columns leaves no feature next to {target_columns} "
                              f"target column(s)")
    return _as_task(path.stem, table, slice(0, -target_columns), slice(table.shape[1] - target_columns, None), path)
