#!/usr/bin/env bash
# Configures and builds anvil into build/ (or $ANVIL_BUILD_DIR). The CUDA backend is built when
# nvcc is found (also under /usr/local/cuda); CI builds it for sm_90a only to stay fast.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${ANVIL_BUILD_DIR:-build}
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH=/usr/local/cuda/bin:$PATH
fi
archs=${ANVIL_CUDA_ARCHS:-"90a;80"}
[ "${CI:-}" = "true" ] && archs=${ANVIL_CUDA_ARCHS:-90a}
jobs=${ANVIL_JOBS:-$(nproc)}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release "-DANVIL_CUDA_ARCHS=$archs" ${ANVIL_CMAKE_ARGS:-} >/dev/null
ninja -C "$build" -j "$jobs" "$@"
