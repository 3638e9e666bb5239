"""`mn train` under torchrun with 2 CPU processes (DDP over gloo) matches one process on the same global batch;
both processes use one run folder (the main process names it) and only the main one prints."""
import os
import re
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

from mn.training import load_checkpoint

# Entry dropout off: its masks hash the row within a process's share, so under DDP they differ from one process's
# (training/loop.py), and digits now defaults to 0.5.
ARGS = ["train", "--dataset", "digits", "--method", "mn", "--num-entries", "40", "--epochs", "1",
        "--max-steps-per-epoch", "3", "--batch-size", "64", "--entry-dropout", "0", "--no-progress"]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo")
def test_two_process_ddp_matches_single_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "mn", *ARGS, "--out-dir", str(tmp_path / "one")], env=env, check=True,
                   capture_output=True, timeout=300)
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "mn", *ARGS], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    (folder,) = (tmp_path / "runs").iterdir()          # no --out-dir: one new folder, named by the main process
    assert ddp.stderr.count(f"mn train: run folder runs/{folder.name}") == 1
    assert len(re.findall(r"^seed 0 \| epoch 1/1 \| train loss", ddp.stderr, re.M)) == 1, "only rank 0 prints"
    _, one = load_checkpoint(tmp_path / "one" / "seed0" / "last.pt")
    _, two = load_checkpoint(folder / "seed0" / "last.pt")
    moved = 0
    for name, tensor in one["model"].items():
        # Same updates up to the order of floating-point sums (gradient all-reduce vs one batch).
        torch.testing.assert_close(two["model"][name], tensor, rtol=1e-4, atol=1e-5, msg=name)
        moved += 1
    assert moved and ddp.stdout.count('"event": "summary"') == 1, "only rank 0 prints"
