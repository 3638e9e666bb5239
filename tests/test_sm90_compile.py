"""The Triton kernels compiled for an H100 (sm_90a) without a GPU, through bench/sm90_resources.py: the config
each kernel runs with autotuning off (MN_AUTOTUNE=0, the GPU tests) and the float64 one must fit the 227 KiB
of shared memory an H100 block may use (else the launch fails on the GPU with OutOfResources), and the
backward's per-class dots must compile to Hopper's wgmma. Runs in a subprocess: the test session has
TRITON_INTERPRET=1, under which nothing is compiled."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
ROOT = Path(__file__).resolve().parents[1]
SHARED_LIMIT_KIB = 227


def first_configs(dtype: str) -> dict[str, dict]:
    """Kernel name -> resources of its first (untuned) candidate, for operands of `dtype`."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "sm90_resources.py"), "--dtype", dtype],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    first = {}
    for line in run.stdout.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 9 and cells[0].startswith("_") and cells[0] not in first:
            if cells[4].startswith("compile error"):
                pytest.fail(f"{cells[0]} {cells[1]} does not compile for sm_90a: {cells[4]}")
            if cells[6] == "None":
                pytest.skip("ptxas gave no resource report (Triton's bundled ptxas missing?)")
            first[cells[0]] = dict(config=cells[1], wgmma=int(cells[4]), regs=int(cells[6]),
                                   shared_kib=float(cells[8]))
    return first


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float64"])
def test_untuned_configs_fit_an_h100(dtype):
    first = first_configs(dtype)
    assert set(first) == {"_lse_kernel", "_fwd_kernel", "_bwd_kernel"}
    for name, r in first.items():
        assert r["shared_kib"] <= SHARED_LIMIT_KIB, f"{name} {r['config']}: {r['shared_kib']} KiB shared memory"
        assert r["regs"] <= 255, name
    if dtype != "float64":      # fp64 has no tensor-core MMA on Hopper's wgmma path
        assert first["_bwd_kernel"]["wgmma"] > 0 and first["_fwd_kernel"]["wgmma"] > 0
