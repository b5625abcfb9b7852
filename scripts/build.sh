#!/usr/bin/env bash
# Configures and builds one flavour of fgnet: scripts/build.sh [release|asan] (default release).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
flavour="${1:-release}"
jobs="${FGNET_JOBS:-$(nproc)}"
case "$flavour" in
  release) dir="$repo/build"; extra=(-DCMAKE_BUILD_TYPE=Release) ;;
  asan) dir="$repo/build-asan"
        extra=(-DCMAKE_BUILD_TYPE=Debug -DFGNET_SANITIZE=ON -DFGNET_BUILD_BENCH=OFF
               -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g") ;;
  *) echo "build.sh: unknown flavour '$flavour' (release or asan)" >&2; exit 2 ;;
esac
cmake -S "$repo" -B "$dir" -G Ninja "${extra[@]}" >/dev/null
cmake --build "$dir" -j "$jobs"
