"""Build entry point. Package metadata lives in pyproject.toml.

`mn_kernels` sits at the repository root (not under python/), so it is added here next to the packages
that setuptools finds under python/. The C++/CUDA extension (csrc/, CMakeLists.txt) joins this file later.
"""
from setuptools import find_packages, setup

setup(packages=find_packages("python", include=["mn", "mn.*"]) + ["mn_kernels"])
