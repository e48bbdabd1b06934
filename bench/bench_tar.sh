#!/bin/bash
# bench_tar.sh: members of a tar.xz over HTTP, diskshelf against
#   nbdfuse -r MNT/x --command nbdkit -s curl URL --filter=tar tar-entry=NAME --filter=xz
# on the same nginx (127.0.0.1, random port) in one run.
#
# Data (as in HTTP-TAR-RESULTS.md): img.raw (ext4 filled from /usr/share,
# SIZE bytes, default 1G), first.bin 16 MiB and last.bin 8 MiB random;
# tar --format=gnu -cf a.tar first.bin img.raw last.bin;
# xz -T2 --block-size=4MiB -k a.tar.  Kept in WORK (default
# /tmp/diskshelf-bench-tar-SIZE) so later runs reuse it.
#
# Rows: time to first byte (4 KiB) of last.bin from a fresh mount, with
# the bytes nginx sent; cold sequential read of img.raw from a fresh
# mount (MB/s).  Each figure is the median of REPS runs (default 3).
# Ratio = diskshelf / nbdkit (below 1 is better for times, above 1 for MB/s).
#
# Usage: bench/bench_tar.sh   (env: SIZE=256M REPS=1 DISKSHELF_BIN=... WORK=...)
set -euo pipefail

SIZE=${SIZE:-1G}
REPS=${REPS:-3}
HERE=$(cd "$(dirname "$0")/.." && pwd)
BIN=${DISKSHELF_BIN:-$HERE/build/diskshelf}
WORK=${WORK:-/tmp/diskshelf-bench-tar-$SIZE}
mkdir -p "$WORK/data" "$WORK/ngx/www" "$WORK/ngx/tmp" "$WORK/mnt" "$WORK/cat"

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# ---- data ----
D=$WORK/data
if [ ! -f "$D/a.tar.xz" ]; then
  echo "making data in $D (SIZE=$SIZE) ..." >&2
  rm -f "$D/img.raw"
  if ! mkfs.ext4 -q -m 0 -N 80000 -O ^has_journal -d /usr/share "$D/img.raw" "$SIZE" 2>/dev/null; then
    # /usr/share does not fit: fill from its subdirectories up to ~85 %
    # (hard-linked into a staging tree, so nothing is copied).
    budget=$(( $(numfmt --from=iec "$SIZE") / 1024 * 85 / 100 ))
    rm -rf "$D/stage" "$D/img.raw"; mkdir "$D/stage"; used=0
    while read -r kb dir; do
      [ $((used + kb)) -gt "$budget" ] && continue
      cp -al "$dir" "$D/stage/" 2>/dev/null && used=$((used + kb))
    done < <(du -sk /usr/share/* 2>/dev/null | sort -rn)
    mkfs.ext4 -q -m 0 -N 80000 -O ^has_journal -d "$D/stage" "$D/img.raw" "$SIZE"
    rm -rf "$D/stage"
  fi
  cp --sparse=never "$D/img.raw" "$D/img.full" && mv "$D/img.full" "$D/img.raw"
  head -c 16M /dev/urandom > "$D/first.bin"
  head -c 8M /dev/urandom > "$D/last.bin"
  tar --format=gnu -cf "$D/a.tar" -C "$D" first.bin img.raw last.bin
  xz -T2 --block-size=4MiB -k -f "$D/a.tar"
fi
IMG_BYTES=$(stat -c %s "$D/img.raw")
ln -f "$D/a.tar.xz" "$WORK/ngx/www/a.tar.xz"

# ---- nginx ----
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
bench_nginx_start "$WORK/ngx" "$WORK/ngx/www"
PORT=$NGINX_PORT
MOUNT_PID=
cleanup() {
  if [ -n "$MOUNT_PID" ]; then
    fusermount3 -u "$WORK/mnt" 2>/dev/null || true
    kill "$MOUNT_PID" 2>/dev/null || true
    wait "$MOUNT_PID" 2>/dev/null || true
  fi
  bench_nginx_stop
}
trap cleanup EXIT
URL=http://127.0.0.1:$PORT/a.tar.xz
cat "$D/a.tar.xz" > /dev/null   # the server side runs from the page cache

sent() { awk '{s += $4} END {printf "%.0f\n", s}' "$WORK/ngx/access.log" 2>/dev/null || echo 0; }

# start_mount TOOL MEMBER: mount in the background; prints the file path.
start_mount() {
  local tool=$1 member=$2
  if [ "$tool" = nbdkit ]; then
    nbdfuse -r "$WORK/mnt/x" --command nbdkit -s curl "$URL" \
      --filter=tar tar-entry="$member" --filter=xz >"$WORK/nbdfuse.log" 2>&1 &
    MOUNT_PID=$!
    FILE=$WORK/mnt/x
  else
    rm -f "$WORK/cat"/*.conf
    printf 'source = %s\nentry = %s\n' "$URL" "$member" > "$WORK/cat/x.conf"
    "$BIN" -f --cache-dir=none "$WORK/cat" "$WORK/mnt" >"$WORK/diskshelf.log" 2>&1 &
    MOUNT_PID=$!
    FILE=$WORK/mnt/x
  fi
}

# stop_mount: unmount and wait for the process.
stop_mount() {
  for _ in $(seq 100); do
    fusermount3 -u "$WORK/mnt" 2>/dev/null && break
    sleep 0.1
  done
  wait "$MOUNT_PID" 2>/dev/null || true
  MOUNT_PID=
}

# wait_file: poll until $FILE can be opened (timeout 600 s).
wait_file() {
  for _ in $(seq 60000); do
    [ -r "$FILE" ] && return 0
    kill -0 "$MOUNT_PID" 2>/dev/null || { echo "mount died" >&2; return 1; }
    sleep 0.01
  done
  return 1
}

# ttfb TOOL: seconds from launch to the first 4 KiB of last.bin, and bytes sent.
ttfb() {
  local tool=$1 t0 t1 b0 b1
  b0=$(sent)
  t0=$(now)
  start_mount "$tool" last.bin
  wait_file
  dd if="$FILE" of=/dev/null bs=4096 count=1 status=none
  t1=$(now)
  b1=$(sent)
  cmp -n 4096 "$FILE" "$D/last.bin" >/dev/null || echo "WRONG BYTES from $tool" >&2
  stop_mount
  echo "$(echo "$t1 - $t0" | bc -l) $((b1 - b0))"
}

# seqread TOOL: MB/s of cat img.raw from a fresh mount.
seqread() {
  local tool=$1 t0 t1
  start_mount "$tool" img.raw
  wait_file
  t0=$(now)
  cat "$FILE" > /dev/null
  t1=$(now)
  stop_mount
  echo "$IMG_BYTES / ($t1 - $t0) / 1000000" | bc -l
}

declare -A R
for tool in nbdkit diskshelf; do
  : > "$WORK/t.$tool"; : > "$WORK/b.$tool"; : > "$WORK/s.$tool"
  for _ in $(seq "$REPS"); do
    read -r t b < <(ttfb "$tool")
    echo "$t" >> "$WORK/t.$tool"; echo "$b" >> "$WORK/b.$tool"
    seqread "$tool" >> "$WORK/s.$tool"
  done
  R[t.$tool]=$(median < "$WORK/t.$tool")
  R[b.$tool]=$(median < "$WORK/b.$tool")
  R[s.$tool]=$(median < "$WORK/s.$tool")
done

# Check the bytes once per tool (outside the timings).
for tool in nbdkit diskshelf; do
  start_mount "$tool" last.bin; wait_file
  cmp "$FILE" "$D/last.bin" || echo "MISMATCH: $tool last.bin" >&2
  stop_mount
done

XZ=$(stat -c %s "$D/a.tar.xz")
printf '\ntar.xz over HTTP: a.tar.xz %s bytes (tar of first.bin 16M, img.raw %s, last.bin 8M; xz -T2 --block-size=4MiB), median of %s\n' \
  "$XZ" "$SIZE" "$REPS"
printf '%-44s %14s %14s %10s\n' "row" "nbdkit+nbdfuse" "diskshelf" "ratio d/n"
row() { printf '%-44s %14.3f %14.3f %10.3f\n' "$1" "$2" "$3" "$(echo "$3 / $2" | bc -l)"; }
row "TTFB last.bin, launch to 4 KiB (s)" "${R[t.nbdkit]}" "${R[t.diskshelf]}"
row "bytes fetched to reach last.bin (MB)" "$(echo "${R[b.nbdkit]} / 1000000" | bc -l)" \
    "$(echo "${R[b.diskshelf]} / 1000000" | bc -l)"
row "sequential read img.raw, cold (MB/s)" "${R[s.nbdkit]}" "${R[s.diskshelf]}"
