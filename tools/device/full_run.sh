#!/usr/bin/env bash
# One device call for the whole GPU picture: the CUDA op tests and whole-model GPU tests, then
# tools/bench/run_gpu.sh (llama-1b and llama-8b: decode, prefill, offline throughput, the P6
# online load through anvil serve), batch-64/256 decode step times, and the HF transformers
# llama-8b decode baseline in the same call. Binaries are built on the dev machine and carried in
# .devbin-lead/ (with the shared libraries the GPU machine lacks in .devbin-lead/lib).
set -u
cd "$(dirname "$0")/../.."
bin=.devbin-lead
export LD_LIBRARY_PATH=$PWD/$bin/lib:${LD_LIBRARY_PATH:-}
out=${OUT:-/tmp/out}/run
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
"$bin/anvil_cuda_tests" >"$out/cuda_tests.log" 2>&1
echo "cuda op tests: $(grep -E '^\[  (PASSED|FAILED) ' "$out/cuda_tests.log" | tr '\n' ' ')"
"$bin/anvil_gpu_tests" >"$out/gpu_tests.log" 2>&1
echo "gpu model tests: $(grep -E '^\[  (PASSED|FAILED) ' "$out/gpu_tests.log" | tr '\n' ' ')"
ANVIL_BIN=$bin/anvil OUT=$out SKIP_HF=${SKIP_HF:-1} STEP_TIMEOUT=120 timeout 320 bash tools/bench/run_gpu.sh >"$out/run_gpu.log" 2>&1
m=/tmp/anvil-bench-models/llama-8b
for b in 64 256; do
  timeout 60 "$bin/anvil" bench latency --model $m --backend cuda --max-seq-len 4096 --max-num-seqs 256 \
    --max-num-tokens 8192 --isl 128 --osl 64 --batch $b --warmup 1 --iters 2 --json "$out/anvil-llama-8b-b$b.json" \
    >"$out/b$b.log" 2>&1
  grep -E "decode step ms|decode tok/s" "$out/b$b.log" | sed "s/^/batch $b: /"
done
timeout 80 python3 tools/bench/hf_baseline.py latency --model $m --isl 128 --osl 256 --warmup 1 --iters 2 \
  --json "$out/hf-llama-8b-decode.json" >"$out/hf8b.log" 2>&1
python3 tools/bench/ratios.py "$out" | tee "$out/ratios.md"
grep -A14 "anvil bench serve" "$out/run_gpu.log" | head -24
tar czf "${OUT:-/tmp/out}/run.tgz" -C "$(dirname "$out")" run
