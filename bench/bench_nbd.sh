#!/bin/bash
# Benchmark: one nbdkit memory export filled with random data, read
# through diskshelf and through nbdfuse (libnbd) in the same run.
#
#   bench/bench_nbd.sh             # SIZE=1G, RUNTIME=10 seconds per row
#   SIZE=256M RUNTIME=5 bench/bench_nbd.sh
#
# Rows: sequential 1 MiB reads, 4 KiB random reads with 1 and 4 readers
# (fio, psync, O_DIRECT so the page cache is not measured).  Prints MB/s,
# IOPS and the diskshelf/nbdfuse ratio per row.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DISKSHELF=${DISKSHELF_BIN:-$ROOT/build/diskshelf}
SIZE=${SIZE:-1G}
RUNTIME=${RUNTIME:-10}
WORK=$(mktemp -d /tmp/bench-nbd.XXXXXX)
SOCK=$WORK/nbdkit.sock
pids=()

cleanup () {
  fusermount3 -u "$WORK/ds" 2>/dev/null || true
  fusermount3 -u "$WORK/nf" 2>/dev/null || true
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

wait_for () {  # wait_for SECONDS COMMAND...
  local deadline=$((SECONDS + $1)); shift
  until "$@" 2>/dev/null; do
    if ((SECONDS > deadline)); then echo "timed out: $*" >&2; exit 1; fi
    sleep 0.1
  done
}

[ -x "$DISKSHELF" ] || { echo "build diskshelf first ($DISKSHELF)" >&2; exit 1; }
for t in nbdkit nbdfuse nbdcopy fio; do
  command -v $t >/dev/null || { echo "needs $t" >&2; exit 1; }
done

nbdkit -f -U "$SOCK" --threads 16 memory "$SIZE" &
pids+=($!)
wait_for 10 test -S "$SOCK"
# Fill the export with incompressible data.
nbdkit -U - random "$SIZE" seed=42 --run "nbdcopy \"\$uri\" 'nbd+unix:///?socket=$SOCK'"

mkdir -p "$WORK/cat" "$WORK/ds" "$WORK/nf"
echo "source = nbd+unix:///?socket=$SOCK" > "$WORK/cat/disk.img.conf"
"$DISKSHELF" -f --cache-dir=none "$WORK/cat" "$WORK/ds" 2>"$WORK/ds.log" &
pids+=($!)
wait_for 20 test -e "$WORK/ds/disk.img"

touch "$WORK/nf/disk.img"
nbdfuse -r "$WORK/nf/disk.img" "nbd+unix:///?socket=$SOCK" &
pids+=($!)
wait_for 20 mountpoint -q "$WORK/nf/disk.img"

# run_fio FILE RW BS JOBS -> "MB/s IOPS"
run_fio () {
  fio --name=b --filename="$1" --rw="$2" --bs="$3" --numjobs="$4" \
      --ioengine=psync --direct=1 --time_based --runtime="$RUNTIME" \
      --ramp_time=1 --group_reporting --size="$SIZE" \
      --randrepeat=0 --norandommap --output-format=json 2>/dev/null |
    /usr/bin/python3 -c '
import json, sys
j = json.load(sys.stdin)["jobs"][0]["read"]
print("%.1f %.0f" % (j["bw_bytes"] / 1e6, j["iops"]))'
}

printf '%-26s %12s %12s %12s %12s %8s\n' "row (size $SIZE)" "diskshelf" "" "nbdfuse" "" "ratio"
printf '%-26s %12s %12s %12s %12s %8s\n' "" "MB/s" "IOPS" "MB/s" "IOPS" ""
row () {  # row LABEL RW BS JOBS
  read -r dmb dio < <(run_fio "$WORK/ds/disk.img" "$2" "$3" "$4")
  read -r nmb nio < <(run_fio "$WORK/nf/disk.img" "$2" "$3" "$4")
  ratio=$(/usr/bin/python3 -c "print('%.2f' % ($dmb / $nmb if $nmb else 0))")
  printf '%-26s %12s %12s %12s %12s %7sx\n' "$1" "$dmb" "$dio" "$nmb" "$nio" "$ratio"
}
row "seq read 1 MiB, 1 reader" read 1M 1
row "seq read 1 MiB, 4 readers" read 1M 4
row "rand read 4 KiB, 1 reader" randread 4k 1
row "rand read 4 KiB, 4 readers" randread 4k 4
