#!/usr/bin/env bash
# One device call: make the benchmark models, run `anvil bench` latency + throughput on llama-1b
# and llama-8b with the HF transformers baseline from the same call, and print the ratios last.
# Builds nothing: the anvil binary is built by the lead on the dev machine and carried
# (ANVIL_BIN, default build/bin/anvil). JSON reports go to $OUT (the device tool's output folder)
# or ./bench-out. Every step has a time limit; a failed step is reported and the rest go on.
#
#   ANVIL_BIN=build-cuda/bin/anvil bash tools/bench/run_gpu.sh            # everything
#   MODELS="llama-1b" SKIP_HF=1 bash tools/bench/run_gpu.sh                # a quick subset
set -u
cd "$(dirname "$0")/../.."
ANVIL_BIN=${ANVIL_BIN:-build/bin/anvil}
OUT_DIR=${OUT:-$PWD/bench-out}
MODEL_ROOT=${MODEL_ROOT:-/tmp/anvil-bench-models}
MODELS=${MODELS:-"llama-1b llama-8b"}
SKIP_HF=${SKIP_HF:-0}
BACKEND=${BACKEND:-cuda}  # cpu: a dry run of this script with MODELS=tiny on a machine without a GPU
STEP_TIMEOUT=${STEP_TIMEOUT:-300}
export ANVIL_COMMIT=${ANVIL_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
mkdir -p "$OUT_DIR" "$MODEL_ROOT"

step() {  # step NAME CMD...: runs with a time limit, logs to $OUT_DIR/NAME.log, never aborts
  local name=$1
  shift
  local t0=$SECONDS
  echo "=== $name: $*"
  timeout --kill-after=10 "$STEP_TIMEOUT" "$@" >"$OUT_DIR/$name.log" 2>&1
  local rc=$?
  if [ $rc -eq 0 ]; then
    grep -v '^\s*[{}\[\]"]' "$OUT_DIR/$name.log" | grep -v 'Loading weights' | tail -n 20
    echo "--- $name ok ($((SECONDS - t0)) s)"
  else
    tail -n 15 "$OUT_DIR/$name.log"
    echo "--- $name FAILED rc=$rc ($((SECONDS - t0)) s)"
  fi
  return 0
}

echo "anvil bench on $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo 'no GPU'), commit $ANVIL_COMMIT"
if [ ! -x "$ANVIL_BIN" ]; then
  echo "no anvil binary at $ANVIL_BIN (set ANVIL_BIN; this script builds nothing)"
  exit 1
fi

for m in $MODELS; do
  step "make-$m" python3 tools/bench/make_model.py --name "$m" --out "$MODEL_ROOT/$m"
done

# Workloads (PERFORMANCE.md): batch-1 decode (ISL 128 / OSL 256), prefill of 2048 tokens
# (OSL 8), and offline throughput of 64 requests of 128 / 128 all at once.
for m in $MODELS; do
  dir=$MODEL_ROOT/$m
  common=(--model "$dir" --backend "$BACKEND" --max-seq-len 4096 --max-num-seqs 256 --max-num-tokens 8192)
  step "anvil-$m-decode" "$ANVIL_BIN" bench latency "${common[@]}" --isl 128 --osl 256 --warmup 2 --iters 5 \
    --json "$OUT_DIR/anvil-$m-decode.json"
  step "anvil-$m-prefill" "$ANVIL_BIN" bench latency "${common[@]}" --isl 2048 --osl 8 --warmup 2 --iters 5 \
    --json "$OUT_DIR/anvil-$m-prefill.json"
  step "anvil-$m-throughput" "$ANVIL_BIN" bench throughput "${common[@]}" --isl 128 --osl 128 --num-requests 64 \
    --json "$OUT_DIR/anvil-$m-throughput.json"
  if [ "$SKIP_HF" != 1 ]; then
    step "hf-$m-decode" python3 tools/bench/hf_baseline.py latency --model "$dir" --isl 128 --osl 256 --warmup 1 --iters 2 \
      --json "$OUT_DIR/hf-$m-decode.json"
    step "hf-$m-prefill" python3 tools/bench/hf_baseline.py latency --model "$dir" --isl 2048 --osl 8 --warmup 1 --iters 3 \
      --json "$OUT_DIR/hf-$m-prefill.json"
    step "hf-$m-throughput" python3 tools/bench/hf_baseline.py throughput --model "$dir" --isl 128 --osl 128 \
      --num-requests 64 --concurrency 64 --json "$OUT_DIR/hf-$m-throughput.json"
  fi
done

# Online load (PERFORMANCE.md P6): `anvil serve` on the last model, ISL 467 / OSL 256 at 2 req/s.
SERVE=${SERVE:-1}
serve_model=${MODELS##* }
if [ "$SERVE" = 1 ] && "$ANVIL_BIN" serve --help >/dev/null 2>&1; then
  port=${SERVE_PORT:-18080}
  "$ANVIL_BIN" serve --model "$MODEL_ROOT/$serve_model" --backend "$BACKEND" --port "$port" --max-seq-len 4096 \
    --max-num-seqs 256 --max-num-tokens 8192 >"$OUT_DIR/anvil-serve.log" 2>&1 &
  server_pid=$!
  ready=0
  for _ in $(seq 1 180); do
    if python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/health', timeout=2)" 2>/dev/null; then
      ready=1
      break
    fi
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 1
  done
  if [ $ready = 1 ]; then
    step "anvil-$serve_model-serve" "$ANVIL_BIN" bench serve --url "http://127.0.0.1:$port" --rate 2 --num-requests 60 \
      --isl 467 --osl 256 --vocab-size "${SERVE_VOCAB:-128000}" --slo-ttft-ms 20 --slo-itl-ms 6.5 --request-timeout 120 \
      --max-duration 240 --json "$OUT_DIR/anvil-$serve_model-serve.json"
  else
    echo "--- anvil serve did not become ready; its log:"
    tail -n 20 "$OUT_DIR/anvil-serve.log"
  fi
  kill "$server_pid" 2>/dev/null
  wait "$server_pid" 2>/dev/null
fi

python3 tools/bench/ratios.py "$OUT_DIR" | tee "$OUT_DIR/ratios.md"
echo "run_gpu.sh: done in $SECONDS s"
