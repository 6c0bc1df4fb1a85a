#!/usr/bin/env bash
# One device call: per-kernel time of a decode step and of an fp8 prefill, read with Nsight
# Compute (kernel durations only: --cache-control none --clock-control none), against the step
# time the same binary reaches without the profiler. The model is llama-8b's shape with
# $LAYERS layers (default 4): every layer runs the same kernels, so a few show the breakdown and
# build in seconds. Binaries come packed by tools/device/pack.sh (.devbin-pack/bin.tar.xz; a
# second pack in $PACK_B is run the same way for an A/B in one call).
#   RUN_TESTS=1   first the CUDA op tests and whole-model GPU tests
#   QUANTS        formats profiled (default: bf16 int4-wo int8-wo fp8)
#   NCU=0         step times only
#   AB_ENV        variables (VAR=VALUE ...) under which each binary also runs first, for an A/B
#                 of a run-time switch such as ANVIL_PDL_CHAIN=0
set -u
cd "$(dirname "$0")/../.."
top=${OUT:-/tmp/out}
out=/tmp/profile-logs
mkdir -p "$out" "$top"
export NCCL_NVLS_ENABLE=0 ANVIL_CACHE=/tmp/anvil-cache
nvidia-smi --query-gpu=name --format=csv,noheader
unpack() {  # unpack PACK DIR
  mkdir -p "$2" && tar xJf "$1" -C "$2"
}
unpack .devbin-pack/bin.tar.xz /tmp/bin-a
[ -n "${PACK_B:-}" ] && unpack "$PACK_B" /tmp/bin-b
export LD_LIBRARY_PATH=/tmp/bin-a/lib:${LD_LIBRARY_PATH:-}
if ldd /tmp/bin-a/anvil | grep -q 'not found'; then export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/tmp/bin-a/lib-mpi; fi
ldd /tmp/bin-a/anvil | grep 'not found'
summ() { echo "$1: $(grep -E '^\[  (PASSED|FAILED) ' "$2" | tr '\n' ' ') $(grep -cE '^\[  SKIPPED \]' "$2") skipped"; grep -E '^\[  FAILED  \] [A-Za-z]' "$2" | head -20; }
if [ "${RUN_TESTS:-0}" = 1 ]; then
  for b in /tmp/bin-a ${PACK_B:+/tmp/bin-b}; do
    timeout 300 $b/anvil_cuda_tests >"$out/cuda_tests-$(basename $b).log" 2>&1
    summ "$b cuda op tests" "$out/cuda_tests-$(basename $b).log"
    timeout 240 $b/anvil_gpu_tests >"$out/gpu_tests-$(basename $b).log" 2>&1
    summ "$b gpu model tests" "$out/gpu_tests-$(basename $b).log"
  done
fi
L=${LAYERS:-4}
MODEL=${MODEL:-llama-8b}
m=/tmp/models/$MODEL-l$L
timeout 150 python3 tools/bench/make_model.py --name $MODEL --layers $L --out $m >"$out/make-$MODEL.log" 2>&1 ||
  tail -3 "$out/make-$MODEL.log"
common=(--model $m --backend cuda --max-seq-len 4096 --max-num-seqs 64 --max-num-tokens 8192)
# LAT="ISL OSL ITERS" of the timed runs (default: 128 in, 129 out, 5 iterations); PREFILL_LAT=FORMAT
# adds a 2048-token prefill run of that format, A/B like the others.
ISL=${ISL:-128}
OSL=${OSL:-33}
for q in ${QUANTS:-bf16 int4-wo int8-wo fp8}; do
  rm -rf $ANVIL_CACHE/engines  # the last format's engines: full-size ones would fill the disk
  qa=(); [ $q != bf16 ] && qa=(--quant $q)
  for b in /tmp/bin-a ${PACK_B:+/tmp/bin-b}; do
    # AB_ENV (e.g. ANVIL_PDL_CHAIN=0): each binary also runs with these variables set, first.
    for e in ${AB_ENV:+"$AB_ENV"} ""; do
      tag=$q-$(basename $b)${e:+-${e//=/-}}
      t0=$SECONDS
      read -r li lo lit <<<"${LAT:-$ISL 129 5}"
      env $e timeout 300 $b/anvil bench latency "${common[@]}" "${qa[@]}" --isl $li --osl $lo --warmup 1 --iters $lit \
        --json "$out/lat-$tag.json" >"$out/lat-$tag.log" 2>&1
      echo "== $tag rc=$? $((SECONDS - t0)) s: $(grep -E '^\s*(decode tok/s|decode step ms|TTFT ms)' "$out/lat-$tag.log" | tr -s ' ' | tr '\n' ';')"
    done
  done
  if [ "${PREFILL_LAT:-}" = $q ]; then
    for e in ${AB_ENV:+"$AB_ENV"} ""; do
      tag=$q-prefill${e:+-${e//=/-}}
      env $e timeout 200 /tmp/bin-a/anvil bench latency "${common[@]}" "${qa[@]}" --isl 2048 --osl 8 --warmup 1 --iters 3 \
        --json "$out/lat-$tag.json" >"$out/lat-$tag.log" 2>&1
      echo "== $tag rc=$?: $(grep -E '^\s*(prefill tok/s|TTFT ms)' "$out/lat-$tag.log" | tr -s ' ' | tr '\n' ';')"
    done
  fi
  [ "${NCU:-1}" = 1 ] || continue
  timeout 240 ncu --clock-control none --cache-control none --print-kernel-base function --csv --page raw \
    --metrics gpu__time_duration.sum --launch-count 4000 --log-file "$out/ncu-decode-$q.csv" \
    /tmp/bin-a/anvil bench latency "${common[@]}" "${qa[@]}" --isl $ISL --osl $OSL --warmup 0 --iters 1 \
    >"$out/ncu-decode-$q.log" 2>&1 || { echo "ncu $q rc=$?"; tail -3 "$out/ncu-decode-$q.log"; }
  echo "-- $q decode, per step ($((OSL - 1)) steps; prefill kernels have other grids)"
  python3 tools/bench/ncu_summary.py "$out/ncu-decode-$q.csv" --per $((OSL - 1)) --grid --top 24
done
if [ "${NCU:-1}" = 1 ] && [ -n "${PREFILL_Q:-fp8}" ]; then
  q=${PREFILL_Q:-fp8}
  timeout 240 ncu --clock-control none --cache-control none --print-kernel-base function --csv --page raw \
    --metrics gpu__time_duration.sum --launch-count 4000 --log-file "$out/ncu-prefill-$q.csv" \
    /tmp/bin-a/anvil bench latency "${common[@]}" --quant $q --isl 2048 --osl 1 --warmup 0 --iters 1 \
    >"$out/ncu-prefill-$q.log" 2>&1 || { echo "ncu prefill rc=$?"; tail -3 "$out/ncu-prefill-$q.log"; }
  echo "-- $q prefill 2048, whole run ($L layers)"
  python3 tools/bench/ncu_summary.py "$out/ncu-prefill-$q.csv" --grid --top 24
fi
if [ -n "${NCU_DETAIL:-}" ]; then
  # NCU_DETAIL=FORMAT:KERNEL_REGEX: memory and scheduler sections of a few decode launches.
  q=${NCU_DETAIL%%:*}; k=${NCU_DETAIL#*:}
  timeout 200 ncu --clock-control none --cache-control none -k "regex:$k" --launch-skip 40 --launch-count 8 \
    --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section Occupancy \
    --section LaunchStats /tmp/bin-a/anvil bench latency "${common[@]}" --quant $q --isl $ISL --osl $OSL --warmup 0 \
    --iters 1 >"$out/ncu-detail-$q.txt" 2>&1 || echo "ncu detail rc=$?"
  grep -E "weight_only_gemv|Grid Size|Registers Per|Achieved Occupancy|DRAM Throughput|Memory Throughput|Duration|L2 Hit|Mem Busy|Max Bandwidth|Stall|Warp Cycles Per Issued|Issued Warp|Theoretical Occ" "$out/ncu-detail-$q.txt" | head -120
fi
tar czf "$top/profile-logs.tgz" -C "$out" .
echo "profile_run.sh done in $SECONDS s"
