"""Checkpoints: one file holds the model, optimiser and schedule state, the early-stopping state, the best
model so far and the configuration, so a run resumes exactly where it stopped and `mn eval` rebuilds the model.

Written with torch.save and read with torch.load(weights_only=True): only tensors and plain containers, so a
checkpoint cannot run code when loaded. Files that are not mn checkpoints raise CheckpointError naming them.
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


def save_checkpoint(path: str | Path, *, config: dict, state: dict) -> None:
    """Atomically write `state` (tensors, numbers, strings, lists, dicts) with the run's config to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": FORMAT, "version": VERSION, "config": json.dumps(config), **state}, tmp)
    os.replace(tmp, path)          # a run killed mid-write leaves the previous checkpoint intact


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


def scheduler_state(scheduler) -> dict:
    """The scheduler's state with MultiStepLR's Counter of milestones as a plain dict (weights_only loads dicts)."""
    return {k: dict(v) if isinstance(v, Counter) else v for k, v in scheduler.state_dict().items()}


def load_scheduler_state(scheduler, state: dict) -> None:
    scheduler.load_state_dict({k: Counter(v) if k == "milestones" else v for k, v in state.items()})
