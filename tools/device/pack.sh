#!/usr/bin/env bash
# Packs the binaries built here for a device call: .devbin-pack/bin.tar.xz (or $1) with anvil,
# anvil_cuda_tests, anvil_gpu_tests and lib/ holding the shared libraries the GPU machine lacks
# (PCRE2, utf8proc, xxHash, cpp-httplib; OpenMPI in lib-mpi/, used only where mpirun's libraries are missing).
# Unpacked by tools/device/session_run.sh and profile_run.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${ANVIL_BUILD_DIR:-build}
out=${1:-.devbin-pack/bin.tar.xz}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/lib" "$tmp/lib-mpi" "$(dirname "$out")"
cp "$build/bin/anvil" "$tmp/"
for t in anvil_cuda_tests anvil_gpu_tests; do
  f=$(find "$build" -maxdepth 3 -type f -name "$t" | head -1)
  [ -n "$f" ] && cp "$f" "$tmp/"
done
for b in "$tmp"/anvil*; do
  ldd "$b" | awk '/=> \//{print $3}' | while read -r l; do
    case "$(basename "$l")" in
      libpcre2*|libutf8proc*|libxxhash*|libcpp-httplib*) cp -n "$l" "$tmp/lib/" ;;
      libmpi*|libopen-*|libopen_*|libpmix*|libprrte*|libhwloc*|libevent*|libfabric*|libucp*|libucs*|libuct*|libmunge*|libpsm*) cp -n "$l" "$tmp/lib-mpi/" ;;
    esac
  done
done
strip --strip-unneeded "$tmp"/anvil* 2>/dev/null || true
XZ_OPT=${XZ_OPT:--9e} tar cJf "$out" -C "$tmp" .
ls -la "$out"
