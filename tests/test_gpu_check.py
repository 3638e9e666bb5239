"""The dry run of bench/gpu_check.sh, so that the one-call GPU diagnosis cannot rot between lent GPUs: the whole
script on the CPU (Triton interpreter, tiny configs, no native build), with every file it must return checked
against the device tool's limits (at most 8 files, each at most 16 MiB, none in a folder) and for its header
and table. The GPU-only steps (the GPU tests, the graph replay, ncu) must say "skipped: no GPU"."""
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "4,40,3,8"
EXPECTED = {  # file -> texts it must contain
    "run.log": ["# gpu_check.sh", "python", "torch", "triton", "== table: exit 0", "== sweep: exit 0",
                "== ablation: exit 0", "== profile: exit 0", "== graph replay: exit 0", "== training step: exit 0",
                "== done"],
    "gpu-bench.md": ["# Head step, fused vs references", "| B,S,C,n | impl |", "| plain closed form tf32 |",
                     "| plain closed form bf16 |", "| gemm limit tf32 (m=", "| gemm limit bf16 (m=", "| autograd |",
                     "| triton tf32 |", "| triton bf16 |", "| triton tf32 ft:3 |", "| autograd ft:3 |",
                     "Value check at", "| dkeys |", "## Training steps with a backbone: the cost of a Table 1 run",
                     "| cell | batch | step ms |", "| cifar10-resnet29-mn-ft1-S | 4 |", "Batch overridden to 4"],
    "gpu-sweep.md": ["# Autotune sweep", "| kernel | dtype | # | config | ms |", "Fastest correct config"],
    "gpu-ablation.md": ["# Ablation of the Triton kernels", "| kernel | dtype | variant |", "| production |",
                        "| base |"],
    "gpu-profile.md": ["# Where a head step's device time goes", "float32 inputs", "bfloat16 inputs",
                       "| kernel / op | calls per step |"],
    "gpu-graph.md": ["# Head step: CUDA graph replay vs eager", "| dtype | eager ms |", "skipped: no GPU"],
    "gpu-tests.txt": ["# GPU tests", "skipped: no GPU"],
    "gpu-ncu.txt": ["# ncu --clock-control none", "skipped: no GPU"],
}


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    if shutil.which("bash") is None or shutil.which("timeout") is None or shutil.which("awk") is None:
        pytest.skip("needs bash, timeout and awk")
    out = tmp_path_factory.mktemp("gpu-check")
    env = dict(os.environ, OUT=str(out), PYTHON=sys.executable, CUDA_VISIBLE_DEVICES="", TRITON_INTERPRET="1",
               GPU_CHECK_INSTALL="0", CHECK_CONFIG=CONFIG, BENCH_CONFIGS=CONFIG, SWEEP_EXTRA="2",
               PROFILE_STEPS="2", TRAIN_STEP_ARGS="--cells cifar10-resnet29-mn-ft1-S --batch 4 --steps 1")
    env.pop("MN_AUTOTUNE", None)
    start = time.monotonic()
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh")], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=400)
    return out, proc, time.monotonic() - start


def test_dry_run_writes_every_file_within_the_limits(dry_run):
    out, proc, seconds = dry_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    entries = sorted(p.name for p in out.iterdir())
    assert entries == sorted(EXPECTED), f"files under $OUT: {entries}"
    assert len(entries) <= 8
    for name in entries:
        path = out / name
        assert path.is_file(), f"{name} is not a plain file"
        assert re.fullmatch(r"[A-Za-z0-9._-]+", name)
        assert 0 < path.stat().st_size <= 16 * 2**20, f"{name}: {path.stat().st_size} bytes"
    assert seconds < 300, f"the dry run took {seconds:.0f} s"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_dry_run_file_has_its_header_and_table(dry_run, name):
    out, proc, _ = dry_run
    text = (out / name).read_text()
    for needle in EXPECTED[name]:
        assert needle in text, f"{name} lacks {needle!r}:\n{text[:3000]}"
    assert "Traceback" not in text, text[-3000:]


def test_dry_run_sweep_measures_every_candidate_of_every_kernel(dry_run):
    """Each kernel's GPU candidates (mn_kernels' gpu_configs), fp32 and bf16, are launched and agree."""
    out, _, _ = dry_run
    text = (out / "gpu-sweep.md").read_text()
    for kernel in ("lse_kernel", "fwd_kernel", "bwd_kernel"):
        for dtype in ("tf32", "bf16"):
            rows = re.findall(rf"^\| {kernel} \| {dtype} \| (\d+) \| [^|]+ \| ([^|]+) \|", text, flags=re.M)
            assert [int(i) for i, _ in rows] == list(range(len(rows))) and len(rows) >= 2, text
            assert all(ms.strip() != "failed" for _, ms in rows), text
    assert "| WRONG |" not in text, text


def test_dry_run_every_ablation_patch_applies_and_runs(dry_run):
    """A kernel edit that leaves an ablation's statement behind shows here: update VARIANTS in
    bench/ablate_gpu.py with the kernel."""
    out, _, _ = dry_run
    text = (out / "gpu-ablation.md").read_text()
    assert "patch did not apply" not in text, text
    assert "| failed |" not in text and "does not build" not in text, text
    assert len(re.findall(r"^\| (lse|fwd|bwd)_kernel \| (tf32|bf16) \| ", text, flags=re.M)) >= 60


def test_a_stale_ablation_patch_is_reported_not_raised():
    """An edit that finds no statement gives the row "patch did not apply" instead of stopping the script."""
    code = """
import sys
sys.path.insert(0, "bench")
import ablate_gpu, kernel_launches as kl
launches = {"float32": kl.capture((4, 40, 3, 8), kl.DTYPES["float32"])}
stale = ("stale", "an edit of a statement the kernel does not have", [("delete", "no_such_statement = 1", "")])
rows = [("bwd_kernel", stale, "float32"), ("bwd_kernel", ablate_gpu.BASE, "float32")]
built = ablate_gpu.build_all(launches, rows)
assert built["bwd_kernel", "stale"].startswith("patch did not apply"), built
assert not isinstance(built["bwd_kernel", "base"], str), built
print("ok")
"""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TRITON_INTERPRET="1", MN_AUTOTUNE="0",
               PYTHONPATH=os.pathsep.join([str(ROOT / "python"), str(ROOT)]))
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stdout + proc.stderr


def test_train_step_names_an_unknown_cell():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "train_step.py"), "--cells", "cifar10-vgg-mn",
                           "--out", os.devnull], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--cells: no configs/table1/cifar10-vgg-mn.json" in proc.stderr, proc.stderr


def test_train_step_writes_a_failed_cell_and_goes_on(tmp_path, monkeypatch):
    """One cell that fails (an out-of-memory on the GPU) is a row saying so; the next cell is still measured."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("train_step", ROOT / "bench" / "train_step.py")
    script = importlib.util.module_from_spec(spec)
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    spec.loader.exec_module(script)
    measured = script.measure

    def measure(cell, **kw):
        if cell == "cifar10-resnet29-vanilla-dot-sgd":
            raise RuntimeError("CUDA out of memory (test double)")
        return measured(cell, **kw)
    monkeypatch.setattr(script, "measure", measure)
    out = tmp_path / "t.md"
    script.main(["--cells", "cifar10-resnet29-vanilla-dot-sgd", "cifar10-resnet29-mn-ft1-S", "--batch", "4",
                 "--steps", "1", "--out", str(out)])
    text = out.read_text()
    assert "| cifar10-resnet29-vanilla-dot-sgd | failed: RuntimeError" in text, text
    assert "| cifar10-resnet29-mn-ft1-S | 4 |" in text, text
