#!/usr/bin/env bash
# Formatting and static analysis: scripts/lint.sh [--tidy]
#   clang-format must leave every C++ file unchanged (checked in CI by scripts/test.sh);
#   --tidy also runs clang-tidy over the sources with the repository's .clang-tidy (needs a
#   configured build/ with compile_commands.json).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
mapfile -t files < <(git ls-files '*.cpp' '*.h' '*.cu')
if ! clang-format --dry-run -Werror "${files[@]}"; then
  echo "lint: run 'clang-format -i' on the files above" >&2
  exit 1
fi
echo "lint: clang-format clean (${#files[@]} files)"
if [ "${1:-}" = "--tidy" ]; then
  mapfile -t sources < <(git ls-files 'src/*.cpp')
  clang-tidy -p build --quiet "${sources[@]}"
fi
