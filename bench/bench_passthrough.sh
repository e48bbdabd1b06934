#!/bin/bash
# Benchmark: FUSE passthrough against READs, for issue 14's "warm reads
# from the disk cache >= 0.9 of reading the cache file directly".
#
#   bench/bench_passthrough.sh            # 1 GiB file, 3 rounds
#   SIZE=256M ROUNDS=1 bench/bench_passthrough.sh
#
# A backing file of SIZE random bytes (under /var/tmp, in the page cache
# after the first read, like a warm disk-cache data file) is served by
# tests/tools/pt_serve (PT_SERVE overrides where it is): once as "pt",
# opened with passthrough (the kernel reads the backing file itself, the
# server sees no READ), once as "normal", served with READs (pread into a
# buffer, then fuse_reply_buf: the daemon's copy path today), on the
# daemon's loop settings (64 threads, no clone_fd) and its read-ahead
# (1 MiB).  Each round mounts afresh, then reads with `dd bs=1M` to
# /dev/null: the backing file itself, pt, normal, the backing file again
# (its faster read counts).  Prints MB/s and the
# shares of the backing file's speed; the last line is the median round.
# Every process started here is stopped by PID at exit.
set -euo pipefail

SIZE=${SIZE:-1G}
ROUNDS=${ROUNDS:-3}
PRIO=${PRIO:--10}
N="nice -n $PRIO"
BENCH_NICE=$N
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
PT_SERVE=${PT_SERVE:-$ROOT/build/tests/pt_serve}
WORK=$(mktemp -d /var/tmp/bench-passthrough.XXXXXX)
PID=

cleanup () {
  set +e
  mountpoint -q "$WORK/mnt" && fusermount3 -u "$WORK/mnt" 2>/dev/null
  [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
  mountpoint -q "$WORK/mnt" && fusermount3 -uz "$WORK/mnt" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

[ -x "$PT_SERVE" ] || { echo "build first: $PT_SERVE" >&2; exit 1; }
bytes=$(numfmt --from=iec "$SIZE")
head -c "$bytes" /dev/urandom > "$WORK/backing"
cat "$WORK/backing" > /dev/null
mkdir "$WORK/mnt"

echo "bench_passthrough: $SIZE, $ROUNDS rounds, kernel $(uname -r)"
printf '%-6s %10s %10s %10s %8s %8s %6s\n' round file_MB/s pt_MB/s \
  normal_MB/s pt/file normal/file reads
rows=()
for round in $(seq "$ROUNDS"); do
  $N "$PT_SERVE" "$WORK/backing" "$WORK/mnt" > "$WORK/pt.log" 2>&1 &
  PID=$!
  for _ in $(seq 200); do
    grep -q ready "$WORK/pt.log" 2>/dev/null && break
    kill -0 "$PID" 2>/dev/null || { cat "$WORK/pt.log" >&2; exit 1; }
    sleep 0.05
  done
  grep -q "ready passthrough=1" "$WORK/pt.log" \
    || { echo "passthrough is off here:" >&2; cat "$WORK/pt.log" >&2; exit 1; }
  dev=$(mountpoint -d "$WORK/mnt")
  echo 1024 > "/sys/class/bdi/$dev/read_ahead_kb" 2>/dev/null || true
  file=$(bench_dd_mbs "$WORK/backing" "$bytes")
  pt=$(bench_dd_mbs "$WORK/mnt/pt" "$bytes")
  normal=$(bench_dd_mbs "$WORK/mnt/normal" "$bytes")
  # The file again: the faster of the two reads, so that a disturbance
  # on a shared machine does not flatter the FUSE rows.
  file=$(bench_max "$file" "$(bench_dd_mbs "$WORK/backing" "$bytes")")
  reads=$(awk '$1 == "reads" && $2 == "pt" {print $3}' "$WORK/mnt/stats")
  fusermount3 -u "$WORK/mnt"
  wait "$PID" || true
  PID=
  row=$(awk -v r="$round" -v f="$file" -v p="$pt" -v n="$normal" -v k="$reads" \
    'BEGIN{printf "%-6s %10.0f %10.0f %10.0f %8.2f %8.2f %6s", r, f, p, n, p/f, n/f, k}')
  echo "$row"
  rows+=("$row")
done
printf '%s\n' "${rows[@]}" | sort -k5 -n | awk -v m=$(( (ROUNDS + 1) / 2 )) \
  'NR == m {$1 = "median"; printf "%-6s %10s %10s %10s %8s %8s %6s\n", $1, $2, $3, $4, $5, $6, $7}'
