#!/usr/bin/env bash
# Runs the CUDA backend tests and micro-benchmarks on the GPU machine (no build there): the
# binary is built here and carried in .devbin-cuda/. Logs go to $OUT; the bench table prints last.
#   usage (device tool): bash tools/device/cuda_backend_run.sh [gtest filter]
set -u
BIN=.devbin-cuda/anvil_cuda_tests
OUT=${OUT:-/tmp/out}
FILTER=${1:-'CudaOps.*:CudaSample.*:CudaGraph.*:CudaBackendAttention.*'}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu --format=csv > "$OUT/gpu.txt" 2>&1
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
timeout 240 "$BIN" --gtest_filter="$FILTER" > "$OUT/tests.log" 2>&1
echo "tests rc=$?"
grep -E "^\[  (FAILED|PASSED|  OK) |Failure|error|Expected|Which is|actual|row " "$OUT/tests.log" | head -60
if [ "${ANVIL_SKIP_BENCH:-0}" != "1" ]; then
  ANVIL_CUDA_BENCH=1 ANVIL_BENCH_OUT="$OUT/bench.md" timeout 150 "$BIN" --gtest_filter='CudaBench.*' > "$OUT/bench.log" 2>&1
  echo "bench rc=$?"
  cat "$OUT/bench.md" 2>/dev/null || tail -30 "$OUT/bench.log"
fi
