#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan) in build-fuzz/ and runs each for a short
# budget (ANVIL_FUZZ_SECONDS, default 20) from its seed corpus. A crash or sanitizer report fails
# the script. Called by tools/test.sh, so CI fuzzes every submission a little.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${ANVIL_FUZZ_SECONDS:-20}
build=build-fuzz
CXX=clang++ CC=clang cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DANVIL_CUDA=OFF \
  -DANVIL_FUZZ=ON -DANVIL_BUILD_TESTS=OFF >/dev/null
targets=(tokenizer chat_template gguf engine)
ninja -C "$build" -j "$(nproc)" $(printf 'anvil_%s_fuzz ' "${targets[@]}")
declare -A corpus=(
  [tokenizer]="tests/data/tokenizers"
  [chat_template]="tests/data/chat_templates/templates"
  [gguf]="tests/data/gguf"
  [engine]=""
)
for t in "${targets[@]}"; do
  work=$(mktemp -d)
  seeds=${corpus[$t]}
  [ -n "$seeds" ] && find "$seeds" -type f -size -256k -exec cp {} "$work/" \; 2>/dev/null || true
  echo "fuzz $t for ${secs}s"
  "$build/fuzz/anvil_${t}_fuzz" -max_total_time="$secs" -max_len=65536 -print_final_stats=0 "$work" \
    >"$build/fuzz_$t.log" 2>&1 || { tail -40 "$build/fuzz_$t.log"; echo "fuzz $t: FAILED"; exit 1; }
  grep -E "^#[0-9]+.*(DONE|pulse)" "$build/fuzz_$t.log" | tail -1 || true
  rm -rf "$work"
done
