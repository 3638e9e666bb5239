"""Build entry point. Package metadata lives in pyproject.toml.

`mn_kernels` sits at the repository root (not under python/), so it is added here next to the packages
that setuptools finds under python/. The native extension `mn._C` (csrc/) is built by CMake with the ninja
generator (both from PyPI, see pyproject.toml's build requirements). Switches, as environment variables:

    MN_BUILD_NATIVE  unset: build mn._C; if CMake finds no usable toolchain (no C++ compiler, no OpenMP), warn
                     and install pure Python (`backend="native"` then reports itself unavailable); 1: that is
                     an error too; 0: skip the extension. A toolchain that is found but fails to compile the
                     sources is always an error (so that CI catches a broken build, the GPU part included).
    MN_BUILD_CUDA    unset: the CUDA kernels when CMake finds a CUDA compiler ("GPU build"); 1: required; 0: skip
    MN_CUDA_ARCHS    CUDA architectures of the GPU build, CMake syntax (default "80;90")
"""
import os
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


def _switch(name: str) -> str | None:
    """'1', '0' or None (unset) for an on/off environment variable; anything else is an error."""
    value = os.environ.get(name, "").strip()
    if value not in ("", "0", "1"):
        raise SystemExit(f"{name} must be 0 or 1 (or unset), got {value!r}")
    return value or None


class CMakeExtension(Extension):
    def __init__(self, name: str):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        build_dir = Path(self.build_temp).resolve() / "cmake"
        try:
            self._configure(ext, build_dir)
        except (OSError, subprocess.CalledProcessError) as error:
            if _switch("MN_BUILD_NATIVE") == "1":
                raise
            print(f"\nmn: WARNING: no toolchain for the native extension mn._C ({error}); installing the "
                  "pure-Python package. backend='native' will report itself unavailable.\n", file=sys.stderr)
            # Nothing was built: drop it from the outputs that setuptools copies and records.
            self.extensions = [e for e in self.extensions if e is not ext]
            return
        subprocess.run(["cmake", "--build", str(build_dir)], check=True)

    def _configure(self, ext, build_dir: Path):
        import pybind11

        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_dir.mkdir(parents=True, exist_ok=True)
        cuda = {"1": "ON", "0": "OFF", None: "AUTO"}[_switch("MN_BUILD_CUDA")]
        args = ["-G", "Ninja", f"-DCMAKE_BUILD_TYPE={'Debug' if self.debug else 'Release'}",
                f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}", f"-DPython_EXECUTABLE={sys.executable}",
                f"-Dpybind11_DIR={pybind11.get_cmake_dir()}", f"-DMN_BUILD_CUDA={cuda}"]
        if os.environ.get("MN_CUDA_ARCHS"):
            args.append(f"-DMN_CUDA_ARCHS={os.environ['MN_CUDA_ARCHS']}")
        subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build_dir), *args], check=True)


native = [] if _switch("MN_BUILD_NATIVE") == "0" else [CMakeExtension("mn._C")]
packages = find_packages("python", include=["mn", "mn.*"]) + find_packages(".", include=["mn_kernels", "mn_kernels.*"])
setup(packages=packages,
      ext_modules=native, cmdclass={"build_ext": CMakeBuild})
