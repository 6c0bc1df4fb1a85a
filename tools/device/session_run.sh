#!/usr/bin/env bash
# One device call of a session's GPU picture, binaries built on the dev machine and carried as
# .devbin-pack/bin.tar.xz (anvil, anvil_cuda_tests, anvil_gpu_tests, lib/ with the shared
# libraries the GPU machine lacks, lib-mpi/ used only when its OpenMPI is missing).
#   PHASE=tests   the CUDA op tests and the whole-model GPU tests
#   PHASE=quant   llama-8b: tuned vs untuned GEMMs (engine vs --no-engine-cache), batch-1 decode
#                 per quantization format, fp8 prefill 2048 and fp8 offline throughput
#   PHASE=exec    llama-8b executor figures: in-flight vs static batches, KV waste, prefix cache
#   PHASE=p5      llama-8b fp8 offline throughput at 2048/2048 (P5), KV cache bf16 and fp8
set -u
cd "$(dirname "$0")/../.."
bin=/tmp/devbin
mkdir -p $bin && tar xJf .devbin-pack/bin.tar.xz -C $bin && ls $bin
export LD_LIBRARY_PATH=$bin/lib:${LD_LIBRARY_PATH:-}
if ldd $bin/anvil | grep -q 'not found'; then export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$bin/lib-mpi; fi
ldd $bin/anvil | grep 'not found'
export NCCL_NVLS_ENABLE=0
out=${OUT:-/tmp/out}
mkdir -p "$out"
export ANVIL_CACHE=/tmp/anvil-cache
PHASE=${PHASE:-tests}
nvidia-smi --query-gpu=name --format=csv,noheader

summ() { echo "$1: $(grep -E '^\[  (PASSED|FAILED) ' "$2" | tr '\n' ' ') $(grep -cE '^\[  SKIPPED \]' "$2") skipped lines"; grep -E '^\[  FAILED  \] [A-Za-z]' "$2" | head -20; }

if [ "$PHASE" = tests ]; then
  timeout 300 $bin/anvil_cuda_tests >"$out/cuda_tests.log" 2>&1
  summ "cuda op tests" "$out/cuda_tests.log"
  timeout 200 $bin/anvil_gpu_tests >"$out/gpu_tests.log" 2>&1
  summ "gpu model tests" "$out/gpu_tests.log"
  grep -E "stored GEMM|engine vs direct" "$out/gpu_tests.log"
  exit 0
fi

m=/tmp/anvil-bench-models/llama-8b
timeout 150 python3 tools/bench/make_model.py --name llama-8b --out $m >"$out/make.log" 2>&1 || { echo "make_model failed"; tail -5 "$out/make.log"; }
common=(--model $m --backend cuda --max-seq-len 4096 --max-num-seqs 256 --max-num-tokens 8192)
lat() {  # lat NAME TIMEOUT ARGS...
  local name=$1 t=$2
  shift 2
  local t0=$SECONDS
  timeout "$t" $bin/anvil bench latency "${common[@]}" "$@" --json "$out/$name.json" >"$out/$name.log" 2>&1
  local rc=$?
  echo "== $name rc=$rc $((SECONDS - t0)) s: $(grep -E '^\s*(decode tok/s|prefill tok/s|decode step ms|TTFT ms)' "$out/$name.log" | tr -s ' ' | tr '\n' ';')"
  [ $rc = 0 ] || tail -4 "$out/$name.log"
}
thr() {  # thr NAME TIMEOUT ARGS...
  local name=$1 t=$2
  shift 2
  local t0=$SECONDS
  timeout "$t" $bin/anvil bench throughput "${common[@]}" "$@" --json "$out/$name.json" >"$out/$name.log" 2>&1
  local rc=$?
  echo "== $name rc=$rc $((SECONDS - t0)) s: $(grep -E '^\s*(output tok/s|TTFT p50|KV waste|prefix cache hit)' "$out/$name.log" | tr -s ' ' | tr '\n' ';')"
  [ $rc = 0 ] || tail -4 "$out/$name.log"
}

if [ "$PHASE" = quant ] && [ -z "${SKIP_BF16:-}" ]; then
  lat bf16-untuned-decode 90 --no-engine-cache --isl 128 --osl 256 --warmup 1 --iters 3
  lat bf16-untuned-prefill 90 --no-engine-cache --isl 2048 --osl 8 --warmup 1 --iters 3
  lat bf16-tuned-decode 150 --isl 128 --osl 256 --warmup 1 --iters 3
  grep -E "gemm autotune|built |pinned" "$out/bf16-tuned-decode.log" | head -4
  lat bf16-tuned-prefill 90 --isl 2048 --osl 8 --warmup 1 --iters 3
  rm -rf $ANVIL_CACHE/engines
fi
if [ "$PHASE" = quant ]; then
  for q in ${QUANTS:-int4-wo int8-wo fp8}; do
    lat $q-decode ${QT:-150} --quant $q --isl 128 --osl 256 --warmup 1 --iters 3
    grep -E "built |quantiz|calib|error" "$out/$q-decode.log" | head -4
    if [ $q = fp8 ]; then
      lat fp8-prefill 90 --quant fp8 --isl 2048 --osl 8 --warmup 1 --iters 3
      thr fp8-tp-128-128 120 --quant fp8 --isl 128 --osl 128 --num-requests 512
    fi
    rm -rf $ANVIL_CACHE/engines
  done
  df -h /tmp | tail -1
fi

if [ "$PHASE" = exec ]; then
  thr tp-128-inflight 100 --isl 128 --osl 128 --num-requests 1024
  thr tp-128-static 100 --isl 128 --osl 128 --num-requests 1024 --static-batch 256
  thr tp-2048-inflight 120 --isl 2048 --osl 128 --num-requests 512
  thr tp-2048-static 120 --isl 2048 --osl 128 --num-requests 512 --static-batch 128
  thr prefix-on 80 --isl 128 --osl 128 --shared-prefix 1024 --num-requests 512
  thr prefix-off 80 --isl 128 --osl 128 --shared-prefix 1024 --num-requests 512 --no-prefix-cache
  thr tp-128-inflight-bs8 100 --isl 128 --osl 128 --num-requests 1024 --kv-block-size 8
fi
if [ "$PHASE" = p5 ]; then
  # --kv-cache fp8 calibrates, which tokenizes the bundled text: the made model needs a tokenizer.
  xz -dc tests/data/tokenizers/llama3/tokenizer.json.xz >$m/tokenizer.json
  cp tests/data/tokenizers/llama3/tokenizer_config.json $m/
  thr fp8-tp-2048-2048-kvfp8 ${QT:-240} --quant fp8 --kv-cache fp8 --isl 2048 --osl 2048 --num-requests ${P5N:-384}
  grep -E "KV cache|blocks" "$out/fp8-tp-2048-2048-kvfp8.log" | head -3
  [ -n "${P5_BF16KV:-}" ] && thr fp8-tp-2048-2048 ${QT:-240} --quant fp8 --isl 2048 --osl 2048 --num-requests ${P5N:-384}
fi
tar czf "$out/logs.tgz" -C "$out" --exclude logs.tgz . 2>/dev/null
echo "session_run.sh $PHASE done in $SECONDS s"
