#!/usr/bin/env bash
# One device call: the GPU test binaries, then llama-8b offline throughput at high concurrency
# (512 x 128/128 and 256 x 2048/128, all requests in flight) through the in-process executor.
set -u
cd "$(dirname "$0")/../.."
bin=.devbin-lead
export LD_LIBRARY_PATH=$PWD/$bin/lib:${LD_LIBRARY_PATH:-}
out=${OUT:-/tmp/out}
nvidia-smi --query-gpu=name --format=csv,noheader
"$bin/anvil_cuda_tests" >"$out/cuda_tests.log" 2>&1
echo "cuda op tests: $(grep -E '^\[  (PASSED|FAILED) ' "$out/cuda_tests.log" | tr '\n' ' ')"
"$bin/anvil_gpu_tests" >"$out/gpu_tests.log" 2>&1
echo "gpu model tests: $(grep -E '^\[  (PASSED|FAILED) ' "$out/gpu_tests.log" | tr '\n' ' ')"
grep -E "engine vs direct|greedy equal|agree on" "$out/gpu_tests.log"
m=/tmp/anvil-bench-models/llama-8b
timeout 90 python3 tools/bench/make_model.py --name llama-8b --out $m >/dev/null 2>&1 || echo "make_model failed"
common=(--model $m --backend cuda --max-seq-len 4096 --max-num-seqs 512 --max-num-tokens 8192)
timeout 150 "$bin/anvil" bench throughput "${common[@]}" --isl 128 --osl 128 --num-requests 512 \
  --json "$out/tp-128-128.json" >"$out/tp1.log" 2>&1
grep -A16 "^throughput" "$out/tp1.log"
timeout 120 "$bin/anvil" bench throughput "${common[@]}" --isl 2048 --osl 128 --num-requests 256 \
  --json "$out/tp-2048-128.json" >"$out/tp2.log" 2>&1
grep -A16 "^throughput" "$out/tp2.log"
