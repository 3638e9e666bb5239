"""Checkpoints: one file (last.pt) holds the model, optimiser and schedule state, the early-stopping state, the
best model so far, the metrics records and the configuration, so a run resumes exactly where it stopped; best.pt
holds the best model with its epoch and configuration, so `mn eval` rebuilds it.

Written with torch.save and read with torch.load(weights_only=True): only tensors and plain containers, so a
checkpoint cannot run code when loaded. Files that are not mn checkpoints raise CheckpointError naming them.

Every file is written durably: into a temporary file, fsync'd, renamed over the old one, and the directory
fsync'd, so a process killed (or a machine losing power) at any moment leaves either the old or the new file,
complete. How a run's files stay consistent with each other is in loop.py (Run._save, Run._recover).
"""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import torch

FORMAT, VERSION = "mn-checkpoint", 1


class CheckpointError(ValueError):
    """A file is missing, unreadable, or not an mn checkpoint (the message names the file)."""


def fsync_dir(folder: str | Path) -> None:
    """Makes renames in `folder` durable; a no-op where the OS cannot open or sync a directory (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write) -> None:
    """write(f) into a binary file that replaces `path` at once: PATH.tmp is written, fsync'd, renamed over
    `path`, then the directory is fsync'd. A kill at any moment leaves `path` old or new, never partial."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_lines(path: str | Path, lines: list[str]) -> None:
    """Atomically replace the text file `path` by `lines` (one per line)."""
    atomic_write(path, lambda f: f.write("".join(line + "\n" for line in lines).encode("utf-8")))


def append_line(path: str | Path, line: str) -> None:
    """Append one line to `path` and fsync it (a kill mid-append can at worst leave a torn last line, which
    readers skip and Run._recover rewrites)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def save_checkpoint(path: str | Path, *, config: dict, state: dict) -> None:
    """Atomically and durably write `state` (tensors, numbers, strings, lists, dicts) with the run's config."""
    blob = {"format": FORMAT, "version": VERSION, "config": json.dumps(config), **state}
    atomic_write(path, lambda f: torch.save(blob, f))


def load_checkpoint(path: str | Path, map_location="cpu") -> tuple[dict, dict]:
    """(config, state) of an mn checkpoint; CheckpointError for anything else."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:        # torch raises many types for truncated / foreign / pickled-code files
        raise CheckpointError(f"{path} is not a readable mn checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an mn checkpoint (no '{FORMAT}' format tag); it was written elsewhere")
    if blob.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {blob.get('version')!r}; this mn reads {VERSION}")
    try:
        config = json.loads(blob.pop("config"))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path} has no readable config") from e
    return config, blob


def require_entries(path: str | Path, state: dict, keys) -> None:
    """CheckpointError naming the file and the entries it lacks (a damaged or hand-made file) before any
    code reads them and fails with a bare KeyError."""
    missing = [k for k in keys if k not in state]
    if missing:
        raise CheckpointError(f"{path} has no {', '.join(map(repr, missing))} entr{'y' if len(missing) == 1 else 'ies'}"
                              f": an incomplete mn checkpoint (damaged, or not written by `mn train`)")


def require_finite_weights(path: str | Path, weights, key: str = "model") -> None:
    """CheckpointError unless state[key] is a state dict of tensors without NaN or Inf: a diverged run's or
    damaged file's weights would otherwise give NaN metrics, or a resumed run that learns nothing."""
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointError(f"{path}: its {key!r} entry is not a state dict of tensors")
    bad = [name for name, t in weights.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise CheckpointError(f"{path}: the weights in {key!r} hold NaN or Inf ({bad[0]}{more}); the run diverged "
                              f"or the file is damaged")


def scheduler_state(scheduler) -> dict:
    """The scheduler's state with MultiStepLR's Counter of milestones as a plain dict (weights_only loads dicts)."""
    return {k: dict(v) if isinstance(v, Counter) else v for k, v in scheduler.state_dict().items()}


def load_scheduler_state(scheduler, state: dict) -> None:
    scheduler.load_state_dict({k: Counter(v) if k == "milestones" else v for k, v in state.items()})
