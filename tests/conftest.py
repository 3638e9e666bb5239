"""pytest hooks: the Triton interpreter on machines without a GPU, and `gpu`-marked tests skipped there.
Shared test helpers live in tests/helpers.py."""
import os

import pytest
import torch

# Without a GPU the Triton kernels run in Triton's CPU interpreter. Triton reads this when a kernel is
# defined, so it is set here, before any test imports mn_kernels.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
