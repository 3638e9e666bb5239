#!/usr/bin/env bash
# The whole GPU diagnosis in one call of the lent machine (~15 minutes per issue, start-up included):
#   on the GPU machine:  bash bench/gpu_check.sh              (OUT is set there)
# It fits in 8 minutes and writes at most 8 files of at most 16 MiB under $OUT, each as it goes (row by row,
# line by line), so a run cut short keeps everything it finished:
#   run.log          versions (GPU, driver, clocks, python, torch, CUDA, triton, nvcc, ncu, commit), then each
#                    step's start, time limit, exit status and console output (autotuning choices, errors)
#   gpu-bench.md     the table: six configs x (gemm limit tf32/bf16, literal form, plain closed form tf32/bf16,
#                    triton tf32/bf16, torch, native), the value check and the unchecked and ft:3 rows
#                    (bench/bench_gpu.py); then whole training steps with a backbone, per Table 1 cell, and
#                    the GPU-hours of a run (bench/train_step.py)
#   gpu-sweep.md     every autotune candidate of each kernel at $CHECK_CONFIG, fp32 and bf16, with its time,
#                    resources and output check, then extra configs (bench/sweep_gpu.py)
#   gpu-ablation.md  each kernel with a stage removed or doubled (bench/ablate_gpu.py)
#   gpu-profile.md   torch.profiler: every device kernel of a step, its share (bench/profile_gpu.py)
#   gpu-graph.md     the head step as a CUDA graph replay vs eager (bench/graph_step.py)
#   gpu-tests.txt    the GPU tests (pytest, xdist when installed)
#   gpu-ncu.txt      ncu --clock-control none on the three kernels at $CHECK_CONFIG, fp32 and bf16
#
# Order, by value per second of lent time: versions first (seconds; every number needs them); the native
# build (the native rows and tests need it; meanwhile the kernels compile in the background); the table (the headline: the step against the targets and both
# references); the sweep (cheap once the table's autotuning has compiled every candidate; it lets tuning go
# on offline); the ablation (where the time goes inside each kernel, no counters needed); the profile (the
# host-side kernels around the Triton ones); the graph replay (the host overhead in one number); the training
# step with a backbone (what a Table 1 run costs in GPU-hours: the README's open figure); the tests
# (the CPU suite already runs these kernels in the interpreter and the table checks values at the main
# config, so a cut here loses least); ncu last (the slowest per kernel, and the tool most likely to fail on
# an unknown runtime).
#
# Time limits (seconds; the env var of each): T_INSTALL 75, T_BENCH 120, T_SWEEP 45, T_ABLATE 60,
# T_PROFILE 20, T_GRAPH 20, T_TRAIN 30, T_TESTS 50, T_NCU 40: 460 s, and 20 s for the versions (each tool call
# under its own timeout) and the gaps between steps: 480 s, the 8 minutes. On top, no step runs past
# GPU_CHECK_TOTAL_S (480) from the start: a slow step shortens the ones after it. Each Python step gets a
# budget (MN_BENCH_BUDGET_S) below its limit, so it stops starting measurements and ends on its own.
#
# Dry run here (CPU, Triton interpreter, tiny configs; tests/test_gpu_check.py runs it in CI):
#   OUT=/tmp/gpu-dry GPU_CHECK_INSTALL=0 CHECK_CONFIG=4,40,3,8 BENCH_CONFIGS=4,40,3,8 SWEEP_EXTRA=2 \
#     PROFILE_STEPS=2 TRAIN_STEP_ARGS="--cells cifar10-resnet29-mn-ft1-S --batch 4 --steps 1" bash bench/gpu_check.sh
# Without a GPU the GPU tests, the graph replay and ncu write "skipped: no GPU" into their files.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/mn-gpu-check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD/python:$PWD${PYTHONPATH:+:$PYTHONPATH}"   # works even if the editable install fails
export TRITON_CACHE_AUTOTUNING=1          # later steps reuse the table's tuning instead of benchmarking again
TOTAL=${GPU_CHECK_TOTAL_S:-480}
CONFIG=${CHECK_CONFIG:-128,10000,100,256}
CAP=$((15 * 1024 * 1024))                 # bytes per file: under the 16 MiB that come back
LOG=$OUT/run.log
START=$SECONDS
if "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  GPU=1
else
  GPU=0
  export TRITON_INTERPRET=1
fi

# cap FILE: appends stdin to FILE up to CAP bytes in all, then one truncation line (keeps reading, so the
# writer never dies of a closed pipe).
cap() {
  local used
  used=$(stat -c %s "$1" 2>/dev/null || echo 0)
  awk -v max=$((CAP - used)) '{ n += length($0) + 1; if (n <= max) { print; fflush() }
    else if (!cut) { print "[... output truncated at the size limit]"; fflush(); cut = 1 } }' >> "$1"
}
note() { echo "$*" | tee -a "$LOG"; }
# The card's state as found (clocks, temperature, power, throttling): one query per field group, since one
# unknown field name makes nvidia-smi print nothing.
gpu_state() {
  timeout 10 nvidia-smi --query-gpu=clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv 2>&1
  timeout 10 nvidia-smi --query-gpu=clocks_event_reasons.active --format=csv 2> /dev/null \
    || timeout 10 nvidia-smi --query-gpu=clocks_throttle_reasons.active --format=csv 2>&1
}
elapsed() { echo $((SECONDS - START)); }

# run_step NAME LIMIT SINK CMD...: CMD with at most LIMIT seconds (less if the run's total is nearly spent),
# its console output appended to SINK. Returns 1 if skipped for lack of time, else 0; the exit status is in RC.
RC=0
run_step() {
  local name=$1 limit=$2 sink=$3
  shift 3
  local left=$((TOTAL - $(elapsed)))
  ((limit > left)) && limit=$left
  if ((left < 8)); then
    note "== $name: skipped: out of time ($left s of $TOTAL s left)"
    RC=124
    return 1
  fi
  note "== $name: start at +$(elapsed) s, limit $limit s"
  local t0=$SECONDS
  MN_BENCH_BUDGET_S=$((limit - limit / 8 - 5 > 1 ? limit - limit / 8 - 5 : 1)) timeout -k 5 "$limit" "$@" 2>&1 \
    | cap "$sink"
  RC=${PIPESTATUS[0]}
  local how=""
  ((RC == 124 || RC == 137)) && how=" (cut at its time limit: what it wrote so far is kept)"
  note "== $name: exit $RC after $((SECONDS - t0)) s$how"
  return 0
}

# py_step NAME LIMIT FILE CMD...: a bench script that writes FILE itself; console to run.log; a line in FILE
# if the step was cut or skipped.
py_step() {
  local name=$1 limit=$2 file=$3
  shift 3
  if ! run_step "$name" "$limit" "$LOG" "$@"; then
    echo "skipped: out of time (the run's $TOTAL s were spent before this step)" >> "$file"
  elif ((RC == 124 || RC == 137)); then
    echo "- cut at the step's time limit; the lines above are complete" >> "$file"
  elif ((RC != 0)); then
    echo "- the step failed (exit $RC): its error is in run.log" >> "$file"
  fi
}

NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2> /dev/null | head -1)

# 1. Versions.
{
  echo "# gpu_check.sh: versions, then each step (start, limit, exit, console output)"
  date -u
  uname -srm
  if command -v nvidia-smi > /dev/null; then
    timeout 10 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
    gpu_state
  else
    echo "no nvidia-smi"
  fi
  timeout 15 "$PY" -c "import torch, triton, platform; print('python', platform.python_version(), 'torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__, 'gpu', torch.cuda.get_device_name() if torch.cuda.is_available() else None)"
  command -v nvcc > /dev/null && timeout 10 nvcc --version | tail -2
  [ -n "$NCU" ] && echo "ncu: $NCU $(timeout 10 "$NCU" --version 2>&1 | tail -1)"
  git log -1 --format='commit %H %s' 2> /dev/null || echo "commit: no git here"
  git status --short 2> /dev/null | head -20
  echo "gpu: $GPU; check config $CONFIG; total $TOTAL s"
} 2>&1 | cap "$LOG"
cat "$LOG"

# 2. The GPU build of mn._C (CMake + nvcc), for this machine's architecture only to save time. Meanwhile
# (GPU only: the interpreter compiles nothing) two background processes compile every autotune candidate and
# every ablation variant at the check config into Triton's on-disk cache, in threads (6 each, niced: the
# build comes first), so that the table's autotuning, the sweep and the ablation find their binaries there
# instead of compiling one by one.
WARM=()
if ((GPU)); then
  note "== warm-up: compiling candidates and ablation variants in the background, limit ${T_INSTALL:-75} s"
  for script in "bench/sweep_gpu.py --extra 0" bench/ablate_gpu.py; do
    # shellcheck disable=SC2086
    MN_BENCH_BUDGET_S=$((${T_INSTALL:-75} - 10)) MN_PRECOMPILE_THREADS=6 timeout -k 5 "${T_INSTALL:-75}" \
      nice -n 10 "$PY" $script --config "$CONFIG" --precompile >> "$LOG" 2>&1 &
    WARM+=($!)
  done
fi
if [ "${GPU_CHECK_INSTALL:-1}" = 1 ]; then
  run_step "pip install (native build)" "${T_INSTALL:-75}" "$LOG" \
    env MN_CUDA_ARCHS="${MN_CUDA_ARCHS:-90}" "$PY" -m pip install -q --no-build-isolation --no-deps -e .
fi
if ((${#WARM[@]})); then
  wait "${WARM[@]}"
  note "== warm-up: done at +$(elapsed) s"
fi
"$PY" -c "import mn, torch; d = 'cuda' if torch.cuda.is_available() else 'cpu'; print('backends on', d, mn.available_backends(d))" 2>&1 | cap "$LOG"

# 3. The table. Its console output (run.log) also carries the autotuner's timings of every candidate.
read -r -a BENCH_LIST <<< "${BENCH_CONFIGS:-}"
py_step "table" "${T_BENCH:-120}" "$OUT/gpu-bench.md" env TRITON_PRINT_AUTOTUNING=1 \
  "$PY" bench/bench_gpu.py --steps3 --out "$OUT/gpu-bench.md" ${BENCH_LIST[@]+--configs "${BENCH_LIST[@]}"}

# 4. The autotune sweep at the check config.
py_step "sweep" "${T_SWEEP:-45}" "$OUT/gpu-sweep.md" \
  "$PY" bench/sweep_gpu.py --config "$CONFIG" --extra "${SWEEP_EXTRA:-64}" --out "$OUT/gpu-sweep.md"

# 5. The ablation.
py_step "ablation" "${T_ABLATE:-60}" "$OUT/gpu-ablation.md" \
  "$PY" bench/ablate_gpu.py --config "$CONFIG" --out "$OUT/gpu-ablation.md"

# 6. The per-kernel profile of the step (torch.profiler), fp32 and bf16.
echo "# Where a head step's device time goes, kernel by kernel (bench/profile_gpu.py, config $CONFIG)" \
  > "$OUT/gpu-profile.md"
py_step "profile" "${T_PROFILE:-20}" "$OUT/gpu-profile.md" "$PY" bench/profile_gpu.py --config "$CONFIG" \
  --dtype float32 bfloat16 --steps "${PROFILE_STEPS:-10}" --out "$OUT/gpu-profile.md"

# 7. CUDA graph replay vs eager (on the CPU: the eager step only, the graph rows skipped).
py_step "graph replay" "${T_GRAPH:-20}" "$OUT/gpu-graph.md" \
  "$PY" bench/graph_step.py --config "$CONFIG" --out "$OUT/gpu-graph.md"

# 7b. Whole training steps with a backbone, per Table 1 cell (priority order), appended to the table's file:
# the GPU-hours of a run.
read -r -a TRAIN_ARGS <<< "${TRAIN_STEP_ARGS:-}"
py_step "training step" "${T_TRAIN:-30}" "$OUT/gpu-bench.md" \
  "$PY" bench/train_step.py --out "$OUT/gpu-bench.md" ${TRAIN_ARGS[@]+"${TRAIN_ARGS[@]}"}

# 8. The GPU tests: every fused-backend test runs on the GPU when there is one (fp64 equality, gradcheck,
# tolerances, races, S = 1e6, the CUDA-graph recipe); one config per kernel (MN_AUTOTUNE=0): tuning each test
# shape would cost more than the tests. Parallel workers (pytest-xdist) where installed: compiling dominates.
TESTS=(tests/test_fused.py tests/test_precision.py tests/test_triton.py tests/test_native.py
  tests/test_kernels_inner_gradient.py tests/test_later_step.py tests/test_autocast.py tests/test_host_sync.py
  tests/test_double_backward.py tests/test_kernel_reruns.py
  tests/test_analysis_figures.py::test_figures_on_cuda_agree_with_cpu)
echo "# GPU tests: pytest ${TESTS[*]} (MN_AUTOTUNE=0)" > "$OUT/gpu-tests.txt"
if ((GPU)); then
  WORKERS=()
  "$PY" -c "import xdist" 2> /dev/null && WORKERS=(-n "${TEST_WORKERS:-8}")
  if run_step "GPU tests" "${T_TESTS:-50}" "$OUT/gpu-tests.txt" env MN_AUTOTUNE=0 \
      "$PY" -m pytest "${TESTS[@]}" ${WORKERS[@]+"${WORKERS[@]}"} -v --tb=short -rfEs --durations=10 \
      -p no:cacheprovider; then
    ((RC == 124 || RC == 137)) && echo "- cut at the step's time limit: the tests above ran" >> "$OUT/gpu-tests.txt"
  else
    echo "skipped: out of time" >> "$OUT/gpu-tests.txt"
  fi
else
  echo "skipped: no GPU (the CPU suite runs these tests through the interpreter: python -m pytest)" \
    >> "$OUT/gpu-tests.txt"
  note "== GPU tests: skipped: no GPU"
fi

# 9. ncu on the three kernels (each with its first autotune candidate: bench/kernel_launches.py runs one head
# step per dtype with MN_AUTOTUNE=0), hardware counters, clocks left as they are.
echo "# ncu --clock-control none on lse_kernel, fwd_kernel, bwd_kernel at $CONFIG, fp32 then bf16 inputs" \
  > "$OUT/gpu-ncu.txt"
if ((!GPU)); then
  echo "skipped: no GPU" >> "$OUT/gpu-ncu.txt"
  note "== ncu: skipped: no GPU"
elif [ -z "$NCU" ]; then
  echo "skipped: ncu not found (PATH, /usr/local/cuda/bin, /opt/nvidia/nsight-compute/*/)" >> "$OUT/gpu-ncu.txt"
  note "== ncu: skipped: not found"
else
  SETS=$(timeout 10 "$NCU" --list-sets 2>&1)
  SET=basic
  grep -qw detailed <<< "$SETS" && SET=detailed
  echo "$NCU, section set '$SET'" >> "$OUT/gpu-ncu.txt"
  if run_step "ncu" "${T_NCU:-40}" "$OUT/gpu-ncu.txt" "$NCU" --clock-control none --target-processes all \
      --kernel-name "regex:^(lse|fwd|bwd)_kernel$" --set "$SET" \
      "$PY" bench/kernel_launches.py --config "$CONFIG" --dtypes float32 bfloat16; then
    ((RC != 0)) && echo "ncu failed or was cut (exit $RC): what it printed is above" >> "$OUT/gpu-ncu.txt"
  else
    echo "skipped: out of time" >> "$OUT/gpu-ncu.txt"
  fi
fi

{
  echo "== done at +$(elapsed) s"
  command -v nvidia-smi > /dev/null && gpu_state
  ls -l "$OUT"
} 2>&1 | cap "$LOG"
tail -12 "$LOG"
