#!/usr/bin/env bash
# The whole GPU check in one call (the lent GPU machine has ~15 minutes per issue, start-up included):
# versions, the GPU tests, the per-kernel profile, then the benchmark table, each into $OUT as it goes.
#   on the GPU machine:  bash bench/gpu_check.sh              (OUT is set there)
# Default time limits (TEST_TIMEOUT, PROFILE_TIMEOUT per dtype, BENCH_TIMEOUT) add up to 7.5 minutes, so with the
# CUDA build of mn._C (about a minute) one call fits the device tool's 10-minute limit; the table is written
# row by row, so a cut-off run keeps its finished rows.
#   dry run here (CPU, Triton interpreter, tiny configs):
#                        OUT=/tmp/gpu-dry BENCH_ARGS="--configs 4,50,3,8" PROFILE_CONFIG=4,50,3,8 bash bench/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/mn-gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD/python:$PWD${PYTHONPATH:+:$PYTHONPATH}"   # works even if the editable install fails

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>/dev/null || echo "no GPU"
  python3 -c "import torch, triton, platform; print('python', platform.python_version(), 'torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
} 2>&1 | tee "$OUT/versions.txt"

# The GPU build of mn._C (CMake + nvcc), for this machine's architecture only to save time.
MN_CUDA_ARCHS=${MN_CUDA_ARCHS:-90} python3 -m pip install -q --no-build-isolation --no-deps -e . 2>&1 \
  | grep -v WARNING | tail -3
python3 -c "import mn; print('backends on cuda:', mn.available_backends('cuda'))" 2>&1 | tee -a "$OUT/versions.txt"

# Every fused-backend test runs on the GPU when there is one (fp64 equality, gradcheck, tolerances, races, S = 1e6);
# one block-size config per kernel (MN_AUTOTUNE=0): tuning each test shape would cost more than the tests.
MN_AUTOTUNE=0 timeout "${TEST_TIMEOUT:-180}" python3 -m pytest tests/test_fused.py tests/test_precision.py \
  tests/test_triton.py tests/test_native.py tests/test_kernels_inner_gradient.py tests/test_autocast.py \
  tests/test_analysis_figures.py::test_figures_on_cuda_agree_with_cpu \
  -q -rs --durations=10 2>&1 | tee "$OUT/gpu-tests.txt"

# Per-kernel device time and compiled resources (registers, spills) of the Triton step, TF32 and bf16.
for dtype in float32 bfloat16; do
  timeout "${PROFILE_TIMEOUT:-60}" python3 bench/profile_gpu.py --config "${PROFILE_CONFIG:-128,10000,100,256}" \
    --dtype "$dtype" --out "$OUT/gpu-profile.md" 2>&1 | tail -40
done

# shellcheck disable=SC2086
TRITON_PRINT_AUTOTUNING=1 timeout "${BENCH_TIMEOUT:-150}" python3 bench/bench_gpu.py --out "$OUT/gpu-bench.md" ${BENCH_ARGS:---steps3} \
  2>&1 | tee "$OUT/gpu-bench.log"
