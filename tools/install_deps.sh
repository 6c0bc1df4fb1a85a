#!/usr/bin/env bash
# Installs what anvil needs to build and test on a fresh Debian machine (Debian packages only).
# Idempotent: packages already present are skipped, so a warm machine pays only dpkg checks.
set -euo pipefail

pkgs=(cmake ninja-build g++ ccache pkg-config git xz-utils unzip python3 python3-pip python3-venv
      libpcre2-dev libutf8proc-dev nlohmann-json3-dev libcpp-httplib-dev libxxhash-dev
      libcli11-dev libgtest-dev clang libclang-rt-14-dev openmpi-bin libopenmpi-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
