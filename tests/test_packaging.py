"""What a regular (non-editable) install ships: every module of mn and mn_kernels, subpackages included. The
test suite itself runs on an editable install, which maps whole folders and would not notice a missing one; the
build runs on a copy of the tracked files, as a source distribution would hold them (no egg-info, no build/)."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_build_copies_every_python_module(tmp_path):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to list the tracked files")
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    src = tmp_path / "src"
    for name in tracked.splitlines():
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    run = subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(tmp_path / "lib")],
                         cwd=src, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    modules = {p.relative_to(src / "python").as_posix() for p in (src / "python" / "mn").rglob("*.py")}
    modules |= {p.relative_to(src).as_posix() for p in (src / "mn_kernels").rglob("*.py")}
    built = {p.relative_to(tmp_path / "lib").as_posix() for p in (tmp_path / "lib").rglob("*.py")}
    assert modules - built == set()
