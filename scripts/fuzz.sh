#!/bin/bash
# Fuzz diskshelf's parsers with libFuzzer (clang, ASan + UBSan).
#
#   scripts/fuzz.sh                 every harness, 60 s each
#   scripts/fuzz.sh NAME [SECONDS]  one harness (NAME as in fuzz/meson.build)
#   scripts/fuzz.sh all SECONDS     every harness, SECONDS each
#
# Builds build-fuzz/ with -Dfuzz=true.  Each run starts from the seed corpus
# fuzz/corpus/NAME (read only) and keeps what it grows in
# build-fuzz/corpus/NAME.  A crash, hang, leak or out-of-memory stops the run
# with a non-zero exit and leaves the input in fuzz/artifacts/; fix the bug,
# then copy the input into fuzz/corpus/NAME so `meson test` replays it on
# every build from then on.
set -euo pipefail
cd "$(dirname "$0")/.."
name="${1:-all}"
seconds="${2:-60}"

if [ ! -f build-fuzz/build.ninja ]; then
  CC=clang meson setup build-fuzz -Dfuzz=true -Db_sanitize=address,undefined \
    -Db_lundef=false -Dbuildtype=debugoptimized >/dev/null
fi
if ! ninja -C build-fuzz > build-fuzz/ninja.log 2>&1; then
  cat build-fuzz/ninja.log >&2
  echo "fuzz: the build failed (above)" >&2
  exit 1
fi

if [ "$name" = all ]; then
  names=$(sed -n "s/^  '\([a-z0-9_]*\)' : .*/\1/p" fuzz/meson.build)
else
  names="$name"
fi

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
mkdir -p fuzz/artifacts
status=0
for n in $names; do
  bin="build-fuzz/fuzz/fuzz-$n"
  [ -x "$bin" ] || { echo "fuzz: no harness named $n" >&2; exit 2; }
  mkdir -p "build-fuzz/corpus/$n"
  log="build-fuzz/fuzz-$n.log"
  echo "fuzz: $n for ${seconds}s"
  if "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
       -max_len=65536 -print_final_stats=1 \
       -artifact_prefix="fuzz/artifacts/$n-" \
       "build-fuzz/corpus/$n" "fuzz/corpus/$n" >"$log" 2>&1; then
    # The last status line says how far it got: executions and coverage.
    grep -E '^#[0-9]+' "$log" | tail -1 || true
    grep -E 'stat::number_of_executed_units' "$log" || true
  else
    status=1
    echo "fuzz: $n FAILED; the input is in fuzz/artifacts/, the log in $log:" >&2
    grep -E 'ERROR|SUMMARY|==[0-9]+==|Test unit written' "$log" | head -20 >&2
  fi
done
exit $status
