#!/bin/bash
# bench/bench_boot.sh: time a real Linux boot (TCG) to its marker line,
# in one run, from
#   local      the raw image on the local disk (the limit)
#   ds-cold    diskshelf, xz over HTTP, overlay = discard, empty caches
#   ds-warm    the same after a remount: the disk cache is warm, the
#              kernel's page cache and the decoded-block cache are not
#   chain      nbdfuse + `nbdkit curl --filter=xz`, qemu snapshot=on
# and print the ratios.  Target: ds-cold within 1.3x of local, and faster
# than chain.
#
# The image is the test suite's (tests/vm_helpers.py: syslinux + the
# host's Debian kernel + a busybox initramfs + an ext4 root; about 30 MiB),
# compressed with `xz -T1 -0 --block-size=1MiB`.  The guest reads its
# kernel, initramfs and a 2 MiB data file (checking its sha256), writes a
# line and powers off.  Each row is the best of RUNS boots (default 2),
# rows interleaved, since TCG timings on a shared machine are noisy.
#
# Usage: bench/bench_boot.sh
# Env:   DISKSHELF_BIN (default build/diskshelf), BENCH_DIR, RUNS
set -euo pipefail

RUNS=${RUNS:-2}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DS=$(realpath "${DISKSHELF_BIN:-$ROOT/build/diskshelf}")
WORK=${BENCH_DIR:-/var/tmp/diskshelf-bench-boot}
IMG=$WORK/img
RUN=$WORK/run
VM="/usr/bin/python3 $ROOT/tests/vm_helpers.py"
mkdir -p "$IMG" "$RUN"

log () { echo "bench: $*" >&2; }
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

# ---- image ----------------------------------------------------------------

if [ ! -f "$IMG/linux.img.xz" ]; then
  log "building the Linux image"
  $VM build "$IMG" > /dev/null
  xz -T1 -0 --block-size=1MiB -k -c "$IMG/linux.img" > "$IMG/linux.img.xz"
fi

# ---- nginx --------------------------------------------------------------

bench_nginx_start "$RUN/nginx" "$IMG"
URL=http://127.0.0.1:$NGINX_PORT/linux.img.xz

# ---- mounts -------------------------------------------------------------

MNT=$RUN/mnt
MOUNT_PID=
FILE=

wait_file () {
  for _ in $(seq 600); do
    [ -e "$1" ] && return 0
    kill -0 "$MOUNT_PID" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}

mount_ds () {   # CACHE-DIR
  rm -rf "$RUN/catalog"; mkdir -p "$RUN/catalog" "$MNT/d"
  printf 'source = %s\noverlay = discard\n' "$URL" > "$RUN/catalog/linux.img.conf"
  "$DS" -f --cache-dir="$1" "$RUN/catalog" "$MNT/d" 2>> "$RUN/ds.log" &
  MOUNT_PID=$!
  FILE=$MNT/d/linux.img
  wait_file "$FILE"
}

mount_chain () {
  mkdir -p "$MNT/x"
  nbdfuse "$MNT/x" --command nbdkit -s curl "$URL" --filter=xz 2>> "$RUN/chain.log" &
  MOUNT_PID=$!
  FILE=$MNT/x/nbd
  wait_file "$FILE"
}

umount_it () {
  local d
  for d in "$MNT/x" "$MNT/d"; do
    mountpoint -q "$d" && fusermount3 -u "$d" 2>/dev/null || true
  done
  if [ -n "$MOUNT_PID" ]; then
    for _ in $(seq 100); do kill -0 "$MOUNT_PID" 2>/dev/null || break; sleep 0.1; done
    kill "$MOUNT_PID" 2>/dev/null || true
    wait "$MOUNT_PID" 2>/dev/null || true
  fi
  MOUNT_PID=
}

cleanup () {
  umount_it || true
  bench_nginx_stop
}
trap cleanup EXIT

# ---- boots ----------------------------------------------------------------

boot () {   # FILE LOG [DRIVE-OPTS] -> seconds to the marker, or "failed"
  $VM boot "$@" 2>> "$RUN/boot-errors.log" || echo failed
}

best () {   # keep the smaller of two numbers ("failed" loses)
  if [ "$1" = failed ] || [ -z "$1" ]; then echo "$2"
  elif [ "$2" = failed ]; then echo "$1"
  else awk -v a="$1" -v b="$2" 'BEGIN { print (a < b) ? a : b }'
  fi
}

LOCAL=; COLD=; WARM=; CHAIN=
ALL_LOCAL=; ALL_COLD=; ALL_WARM=; ALL_CHAIN=
record () {   # NAME SECONDS: keep the best in NAME, every run in ALL_NAME
  local all="ALL_$1"
  printf -v "$all" '%s' "${!all:+${!all} }$2"
  printf -v "$1" '%s' "$(best "${!1}" "$2")"
}
for run in $(seq "$RUNS"); do
  log "run $run/$RUNS: local raw"
  cp "$IMG/linux.img" "$RUN/local.img"
  record LOCAL "$(boot "$RUN/local.img" "$RUN/local.log")"

  log "run $run/$RUNS: diskshelf cold (http + xz, empty caches)"
  rm -rf "$RUN/cache"
  if mount_ds "$RUN/cache"; then
    record COLD "$(boot "$FILE" "$RUN/cold.log")"
  else record COLD failed; fi
  umount_it

  log "run $run/$RUNS: diskshelf warm (disk cache from the cold run)"
  if mount_ds "$RUN/cache"; then
    record WARM "$(boot "$FILE" "$RUN/warm.log")"
  else record WARM failed; fi
  umount_it

  log "run $run/$RUNS: nbdfuse + nbdkit curl --filter=xz, snapshot=on"
  if mount_chain; then
    record CHAIN "$(boot "$FILE" "$RUN/chain-boot.log" snapshot=on)"
  else record CHAIN failed; fi
  umount_it
done

ratio () { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else print "-" }'; }

echo
echo "Linux boot to marker (TCG, best of $RUNS; image $(du -h --apparent-size "$IMG/linux.img" | cut -f1), xz $(du -h --apparent-size "$IMG/linux.img.xz" | cut -f1))"
printf '%-38s %8s %9s   %s\n' "source" "best s" "vs local" "every run, s"
printf '%-38s %8s %9s   %s\n' "local raw file (limit)" "$LOCAL" "1.00" "$ALL_LOCAL"
printf '%-38s %8s %9s   %s\n' "diskshelf http+xz, cold" "$COLD" "$(ratio "$COLD" "$LOCAL")" "$ALL_COLD"
printf '%-38s %8s %9s   %s\n' "diskshelf http+xz, warm disk cache" "$WARM" "$(ratio "$WARM" "$LOCAL")" "$ALL_WARM"
printf '%-38s %8s %9s   %s\n' "nbdfuse + nbdkit curl --filter=xz" "$CHAIN" "$(ratio "$CHAIN" "$LOCAL")" "$ALL_CHAIN"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (2 cores; TCG boots slow down with it)"
echo "diskshelf cold vs chain: $(ratio "$COLD" "$CHAIN") (below 1 is faster)"
