"""The CUDA kernels of csrc/cuda, run on the CPU: compiled with g++ against tests/cuda_emulation (blocks in
turn, threads as OS threads meeting at a barrier) and compared with the CPU kernels of mn._C on the same
operands. Without a GPU this is the only run the CUDA kernels get; it checks their arithmetic and indexing
(every tile and chunk boundary: B past a query block, S past an entry tile, C past a class chunk, C n past a
forward block), not races between blocks or speed -- the gpu-marked tests in test_native.py do that."""
import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from mn import native_ops
from mn_kernels.dropout import seed_mix_tensor

from helpers import shape_id

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(native_ops.unavailable(torch.device("cpu")) is not None or shutil.which("g++") is None,
                                reason="needs mn._C (the CPU kernels to compare with) and g++")


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    """ctypes handle of the CUDA kernels built for the emulation."""
    out = tmp_path_factory.mktemp("cuda_emulation") / "libmn_cuda_emulated.so"
    subprocess.run(["g++", "-std=c++20", "-O1", "-pthread", "-fPIC", "-shared", "-DMN_CUDA_EMULATION", "-DMN_WITH_CUDA",
                    f"-I{ROOT / 'tests' / 'cuda_emulation'}", "-x", "c++",
                    str(ROOT / "csrc/cuda/inner_gradient_cuda.cu"),
                    "-x", "none", str(ROOT / "tests/cuda_emulation/shim.cpp"), "-o", str(out)],
                   check=True, capture_output=True)
    return ctypes.CDLL(str(out))


def _operands(B, S, C, n, dtype, seed=0):
    """Random operands of the contraction kernels (api.h FwdArgs / BwdArgs), as the op prepares them."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.randn(*shape, generator=g, dtype=dtype)
    kh = torch.nn.functional.normalize(rand(S, n), dim=1)
    return dict(zs=3.0 * torch.nn.functional.normalize(rand(B, n), dim=1), kh=kh, khT=kh.t().contiguous(),
                deltaT=rand(C, S), ce=rand(S).abs(), dU=rand(B, C, n), dL=rand(B), D=rand(B))


def _run(kernel, ops, B, S, C, n, dropout, seed):
    """lse, U, loss (forward) then dzh, dkh, ddelta, dce (backward) of `kernel` ("cpu" or the emulated lib)."""
    dtype = ops["zs"].dtype
    new = lambda *shape: torch.zeros(*shape, dtype=dtype)          # the backward accumulates into zeroed outputs
    fwd = dict(lse=new(B), U=new(B, C, n), loss=new(B))
    bwd = dict(dzh=new(B, n), dkh=new(S, n), ddelta=new(S, C), dce=new(S))
    mix = seed_mix_tensor(seed, "cpu")                              # kept alive: the kernels read it
    drop = native_ops._dropout_args(dropout, mix, torch.device("cpu"))
    ptr = lambda t: t.data_ptr()
    operands = [ops[k] for k in ("zs", "kh", "khT", "deltaT", "ce")]
    if kernel == "cpu":
        ext, name = native_ops._extension(), native_ops._dtype_name(dtype)
        ext.inner_gradient_fwd("cpu", name, B, S, C, n, *drop, *map(ptr, operands + list(fwd.values())), 2, 0)
        ext.inner_gradient_bwd("cpu", name, B, S, C, n, *drop,
                               *map(ptr, operands + [fwd["lse"], ops["dU"], ops["dL"], ops["D"]] + list(bwd.values())),
                               2, 0)
    else:
        f64 = int(dtype == torch.float64)
        sizes = [ctypes.c_int64(v) for v in (B, S, C, n)] + [ctypes.c_void_p(drop[0]), ctypes.c_uint32(drop[1])]
        pointers = lambda ts: [ctypes.c_void_p(t.data_ptr()) for t in ts]
        kernel.emulated_fwd(f64, *sizes, *pointers(operands + list(fwd.values())))
        kernel.emulated_bwd(f64, *sizes, *pointers(operands + [fwd["lse"], ops["dU"], ops["dL"], ops["D"]]
                                                   + list(bwd.values())))
    return {**fwd, **bwd}


# (B, S, C, n): one of everything; odd sizes inside single tiles; then past every block and chunk boundary
# of the CUDA kernels (query block 8, entry tile 32 / 256, class chunk 64 and 16, forward block C n > 1024).
SHAPES = [(1, 1, 2, 1), (3, 7, 2, 3), (9, 70, 5, 11), (19, 300, 67, 17)]


@pytest.mark.parametrize("dropout", [0.0, 0.5])
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_emulated_cuda_kernels_equal_the_cpu_kernels_float64(emulated, shape, dropout):
    ops = _operands(*shape, torch.float64)
    want = _run("cpu", ops, *shape, dropout, seed=11)
    got = _run(emulated, ops, *shape, dropout, seed=11)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-12, atol=1e-12, msg=name)


def test_emulated_cuda_kernels_float32(emulated):
    shape = (9, 70, 5, 11)
    ops = _operands(*shape, torch.float32)
    want = _run("cpu", {k: v.double() for k, v in ops.items()}, *shape, 0.0, seed=0)
    got = _run(emulated, ops, *shape, 0.0, seed=0)
    for name in want:
        torch.testing.assert_close(got[name].double(), want[name], rtol=1e-4, atol=1e-4, msg=name)


def test_dropping_every_entry_gives_minus_infinity_and_zeros(emulated):
    shape = (3, 7, 2, 3)
    ops = _operands(*shape, torch.float64)
    got = _run(emulated, ops, *shape, 1.0 - 1e-9, seed=1)   # threshold 2^24: every entry dropped
    assert torch.equal(got["lse"], torch.full((3,), float("-inf"), dtype=torch.float64))
    for name in ("U", "loss", "dzh", "dkh", "ddelta", "dce"):
        assert not got[name].any(), name
