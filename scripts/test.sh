#!/bin/bash
# Install what is missing, build, and run every test: the C unit tests
# (meson test) and the pytest suite against real peers.
# `scripts/test.sh --asan` does the same on the sanitizer build.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
if [ "${1:-}" = "--asan" ]; then
  scripts/build.sh --asan
  export DISKSHELF_BIN="$PWD/build-asan/diskshelf"
  export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}"
  export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
  builddir=build-asan
else
  scripts/build.sh
  export DISKSHELF_BIN="$PWD/build/diskshelf"
  builddir=build
fi
meson test -C "$builddir" --print-errorlogs
exec /usr/bin/python3 -m pytest tests/ -q -p no:cacheprovider
