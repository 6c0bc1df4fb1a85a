#!/usr/bin/env bash
# The test command (README's second command, and what CI runs): installs dependencies, builds
# everything, runs the whole CTest suite. GPU tests skip themselves where no GPU is present.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install_deps.sh
tools/build.sh
cd "${ANVIL_BUILD_DIR:-build}"
ctest --output-on-failure -j "$(nproc)" --timeout 600
