#!/usr/bin/env bash
# Checks formatting, builds fgnet and runs the whole test suite twice: optimised, then under
# ASan + UBSan.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
jobs="${FGNET_JOBS:-$(nproc)}"

"$repo/scripts/lint.sh"

"$repo/scripts/build.sh" release
(cd "$repo/build" && ctest --output-on-failure -j "$jobs")

"$repo/scripts/build.sh" asan
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
(cd "$repo/build-asan" && ctest --output-on-failure -j "$jobs")
