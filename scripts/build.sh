#!/bin/bash
# Build diskshelf: `scripts/build.sh` (build/) or `scripts/build.sh --asan`
# (build-asan/, AddressSanitizer + UndefinedBehaviorSanitizer, warnings
# are errors).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--asan" ]; then
  dir=build-asan
  opts=(-Db_sanitize=address,undefined -Db_lundef=false -Dwerror=true)
else
  dir=build
  opts=()
fi
if [ ! -f "$dir/build.ninja" ]; then
  meson setup "$dir" "${opts[@]}"
fi
ninja -C "$dir"
