"""The Triton kernels compiled for an H100 (sm_90a) without a GPU, through bench/sm90_resources.py.

- At n = 256, the config each kernel runs with autotuning off (MN_AUTOTUNE=0, the GPU tests) and the float64
  one fit the 227 KiB of shared memory an H100 block may use (else the launch fails on the GPU with
  OutOfResources), and the forward and backward compile their main dots to Hopper's wgmma.
- At the largest n the kernels accept (`max_features`), every kernel still has a config that fits.
Runs in a subprocess: the test session has TRITON_INTERPRET=1, under which nothing is compiled."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")
ROOT = Path(__file__).resolve().parents[1]
SHARED_LIMIT_KIB = 227
KERNELS = {"lse_kernel", "fwd_kernel", "bwd_kernel", "entry_fwd_kernel", "entry_bwd_kernel"}
LATER_KERNELS = {"stats_kernel", "fwd_kernel", "bwd_stats_kernel", "bwd_query_kernel", "bwd_entry_kernel"}


def compiled_configs(dtype: str, n: int, which: str) -> dict[str, list[dict]]:
    """Kernel name -> resources of the candidates (`which`: first, last or all) the launcher would tune for
    `dtype` operands, in order."""
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "MN_AUTOTUNE")}
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "sm90_resources.py"), "--dtype", dtype,
                          "--config", f"128,10000,100,{n}", "--which", which, "--kernels", ",".join(sorted(KERNELS))],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    found = {}
    for line in run.stdout.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) != 9 or cells[0] not in KERNELS:
            continue
        if cells[4].startswith("compile error"):
            pytest.fail(f"{cells[0]} {cells[1]} does not compile for sm_90a: {cells[4]}")
        if cells[6] == "None":
            pytest.skip("ptxas gave no resource report (Triton's bundled ptxas missing?)")
        found.setdefault(cells[0], []).append(dict(config=cells[1], wgmma=int(cells[4]), regs=int(cells[6]),
                                                   shared_kib=float(cells[8])))
    assert set(found) == KERNELS
    return found


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float64"])
def test_untuned_configs_fit_an_h100(dtype):
    for name, (first,) in compiled_configs(dtype, 256, "first").items():
        assert first["shared_kib"] <= SHARED_LIMIT_KIB, f"{name} {first['config']}: {first['shared_kib']} KiB"
        assert first["regs"] <= 255, name
        # fp64 has no wgmma; the lse pass and the per-entry kernels are 1/C and 1/B of the work
        if dtype != "float64" and name in ("fwd_kernel", "bwd_kernel"):
            assert first["wgmma"] > 0, f"{name} {first['config']} compiles to no wgmma"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_small_config_fits_at_the_largest_feature_count(dtype):
    """The last candidate of each kernel is the fallback the tuner keeps when the others exceed shared memory."""
    from mn_kernels.inner_gradient import max_features
    n = max_features(getattr(torch, dtype))
    for name, (small,) in compiled_configs(dtype, n, "last").items():
        assert small["shared_kib"] <= SHARED_LIMIT_KIB, \
            f"{name} {small['config']} at n = {n}: {small['shared_kib']} KiB"


def later_configs(dtype: str, n: int, which: str) -> dict[str, dict]:
    """The later-step kernels' first or last candidate, compiled for sm_90a (bench/sm90_later_step.py)."""
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "MN_AUTOTUNE")}
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "sm90_later_step.py"), "--dtypes", dtype,
                          "--config", f"128,10000,100,{n}", "--which", which],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    found = {}
    for line in run.stdout.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) != 10 or cells[1] not in LATER_KERNELS:
            continue
        if cells[5].startswith("compile error"):
            pytest.fail(f"later step {cells[1]} {cells[2]} does not compile for sm_90a: {cells[5]}")
        found[cells[1]] = dict(config=cells[2], shared_kib=float(cells[9]))
    assert set(found) == LATER_KERNELS
    return found


@pytest.mark.parametrize("dtype,which", [("float32", "first"), ("bfloat16", "first"), ("float32", "last"),
                                         ("float64", "last")])
def test_later_step_kernels_compile_and_fit(dtype, which):
    """The first candidates at n = 256, and the fallbacks at the largest n the later-step kernels take."""
    from mn_kernels.later_step import max_features
    n = 256 if which == "first" else max_features(getattr(torch, dtype))
    for name, config in later_configs(dtype, n, which).items():
        assert config["shared_kib"] <= SHARED_LIMIT_KIB, f"{name} {config['config']} at n = {n}"
