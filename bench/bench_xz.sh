#!/bin/bash
# bench/bench_xz.sh: diskshelf's xz layer against the seed chain
#   nbdfuse -r MNT/x --command nbdkit -s curl URL --filter=xz
# on the same nginx-served images, in one run.
#
# Three shapes, every multi-block row on each (issue 14):
#   filled   an ext4 file system of SIZE (default 2G) filled with real
#            files by mkfs.ext4 -d, `xz -T2 --block-size=16MiB`;
#   vm-4M    a mostly empty VM-style ext4 image of VM_SIZE (default 512M)
#            holding a few files (mkfs.ext4 -d, no loop mount),
#            `xz -T2 --block-size=4MiB`;
#   vm-24M   the same image with `xz -T0` at its default level (24 MiB
#            blocks).
# plus the single-block rows on the filled image (`xz -T1 -1`).
#
# Rows: time to the first 4 KiB, cold sequential read (dd bs=1M; best of
# two runs each, interleaved with two runs of the xz -T2 limit), the CPU
# seconds (user + system) the serving processes and xz used for it (the
# steadier figure on a loaded machine), 4 KiB
# random reads with 1 and 4 readers (fio psync O_DIRECT, RUNTIME s),
# peak RSS of the serving processes, and `xz -T2 -dc FILE > /dev/null`
# as the decoding limit.  Both sides get a 128 MiB decoded-block cache
# (nbdkit's xz filter holds 8 blocks of 16 MiB).  Each shape also gets
# the FUSE ceiling: bench/fuse_ceiling serving a file of the same size
# from memory, read the same way with the same kernel read-ahead (1 MiB),
# in three reply modes (copy = what diskshelf does, nocopy = without the
# user-space copy, splice = an fd buffer spliced into /dev/fuse).
#
# Two rows of issue 14 close the run:
#   1-block warm: after a restart, `dd` through the mount against `dd` of
#            the decoded object's bytes in its disk-cache data file
#            (bench_cache_data in lib.sh), same size, read back to back;
#            target >= 0.9;
#   ten at once: ten entries, each its own URL of the filled image (ten
#            symlinks), the first TEN_MB MiB (default 64) of each read by
#            ten concurrent dd; peak RSS (VmHWM) of the daemon against
#            --memory-cache-size (128M) + 64 MiB, the rate of all ten
#            together, and the blocks decoded against the least (from
#            `diskshelf status`: each block read once is decoded once).
#
# Usage: bench/bench_xz.sh            (SIZE=256M VM_SIZE=256M RUNTIME=5
#        for a quick run of a few minutes; ROWS=seq or ROWS=rand for only
#        those multi-block rows; SHAPES="vm-4M vm-24M" for some shapes,
#        SHAPES= for none: only the single-block and ten-entry rows;
#        SHAPES= ROWS=ten for only the ten-entry rows)
# Env:   DISKSHELF_BIN (default build/diskshelf), BASE_BIN (an older
#        diskshelf measured in the same run, cold sequential and
#        ten-at-once rows only: before/after figures), CEILING_BIN (default
#        build/bench/fuse_ceiling), BENCH_DIR, SIZE, VM_SIZE, RUNTIME
set -euo pipefail

SIZE=${SIZE:-2G}
VM_SIZE=${VM_SIZE:-512M}
SHAPES=${SHAPES-filled vm-4M vm-24M}
ROWS_WANTED=${ROWS:-all}
RUNTIME=${RUNTIME:-20}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DS=$(realpath "${DISKSHELF_BIN:-$ROOT/build/diskshelf}")
BASE=${BASE_BIN:+$(realpath "$BASE_BIN")}
CEILING=$(realpath "${CEILING_BIN:-$(dirname "$DS")/bench/fuse_ceiling}")
WORK=${BENCH_DIR:-/var/tmp/diskshelf-bench-xz}
IMG=$WORK/img
RUN=$WORK/run
mkdir -p "$IMG" "$RUN"

log () { echo "bench: $*" >&2; }

# ---- images -------------------------------------------------------------

make_images () {
  local stamp=$IMG/fs.img.size
  if [ -f "$IMG/fs.img.1blk.xz" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$SIZE" ]; then
    return
  fi
  rm -rf "$IMG"/* "$WORK/stage"
  log "staging real files for a $SIZE ext4 image"
  /usr/bin/python3 - "$SIZE" "$WORK/stage" <<'EOF'
import os, shutil, sys
units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
s = sys.argv[1]
size = int(s[:-1]) * units[s[-1]] if s[-1] in units else int(s)
target = size * 6 // 10          # leave room for ext4 metadata
stage = sys.argv[2]
total = 0
for top in ("/usr/share", "/usr/lib"):
    for d, dirs, files in os.walk(top):
        dirs.sort()
        for f in sorted(files):
            p = os.path.join(d, f)
            if os.path.islink(p) or not os.path.isfile(p):
                continue
            n = os.path.getsize(p)
            if n > 64 << 20 or total + n > target:
                continue
            dst = stage + p
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            try:
                shutil.copyfile(p, dst)
            except OSError:
                continue
            total += n
        if total >= target * 99 // 100:
            break
print(f"staged {total >> 20} MiB", file=sys.stderr)
EOF
  truncate -s "$SIZE" "$IMG/fs.img"
  mkfs.ext4 -q -F -d "$WORK/stage" "$IMG/fs.img"
  rm -rf "$WORK/stage"
  log "compressing: xz -T2 --block-size=16MiB"
  xz -T2 --block-size=16MiB -c "$IMG/fs.img" > "$IMG/fs.img.xz"
  log "compressing: xz -T1 -1 (one block)"
  xz -T1 -1 -c "$IMG/fs.img" > "$IMG/fs.img.1blk.xz"
  echo "$SIZE" > "$stamp"
}

# A mostly empty VM-style image: ext4 of VM_SIZE with a few files (about
# a tenth of it), the rest never written, as a fresh VM disk looks.
make_vm_images () {
  local stamp=$IMG/vm.img.size
  if [ -f "$IMG/vm.img.24M.xz" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$VM_SIZE" ]; then
    return
  fi
  rm -rf "$IMG"/vm.img* "$WORK/vmstage"
  log "staging a few files for a mostly empty $VM_SIZE ext4 image"
  /usr/bin/python3 - "$VM_SIZE" "$WORK/vmstage" <<'EOF2'
import os, shutil, sys
units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
s = sys.argv[1]
size = int(s[:-1]) * units[s[-1]] if s[-1] in units else int(s)
target = size // 10
stage = sys.argv[2]
total = 0
for top in ("/usr/bin", "/etc", "/usr/share/doc"):
    for d, dirs, files in os.walk(top):
        dirs.sort()
        for f in sorted(files):
            p = os.path.join(d, f)
            if os.path.islink(p) or not os.path.isfile(p):
                continue
            n = os.path.getsize(p)
            if total + n > target:
                continue
            dst = stage + p
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            try:
                shutil.copyfile(p, dst)
            except OSError:
                continue
            total += n
print(f"staged {total >> 20} MiB", file=sys.stderr)
EOF2
  truncate -s "$VM_SIZE" "$IMG/vm.img"
  mkfs.ext4 -q -F -d "$WORK/vmstage" "$IMG/vm.img"
  rm -rf "$WORK/vmstage"
  log "compressing the VM image: xz -T2 --block-size=4MiB, xz -T0 (24 MiB blocks)"
  xz -T2 --block-size=4MiB -c "$IMG/vm.img" > "$IMG/vm.img.4M.xz"
  xz -T0 -c "$IMG/vm.img" > "$IMG/vm.img.24M.xz"
  echo "$VM_SIZE" > "$stamp"
}

# ---- nginx --------------------------------------------------------------

# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
PORT=
start_nginx () {
  bench_nginx_start "$RUN/nginx" "$IMG" || exit 1
  PORT=$NGINX_PORT
}

# ---- mounts -------------------------------------------------------------

# Each mount sets FILE (the image in the mount) and PIDS (serving
# processes, for RSS) and is undone by umount_it.
MNT=$RUN/mnt
FILE=
PIDS=
MOUNT_PID=

wait_file () {
  local i
  for i in $(seq 600); do
    [ -e "$1" ] && return 0
    kill -0 "$MOUNT_PID" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}

mount_chain () {   # URL [extra nbdkit args]
  local url=$1; shift
  mkdir -p "$MNT/x"
  nbdfuse -r "$MNT/x" --command nbdkit -s curl "$url" --filter=xz "$@" \
    2> "$RUN/chain.log" &
  MOUNT_PID=$!
  FILE=$MNT/x/nbd
  wait_file "$FILE" || return 1
  PIDS="$MOUNT_PID $(pgrep -P "$MOUNT_PID" nbdkit || true)"
}

mount_ds () {   # URL [extra diskshelf args]
  local url=$1; shift
  rm -rf "$RUN/catalog"; mkdir -p "$RUN/catalog" "$MNT/d"
  echo "source = $url" > "$RUN/catalog/x.conf"
  "$DS" -f --memory-cache-size=128M "$@" "$RUN/catalog" "$MNT/d" 2> "$RUN/ds.log" &
  MOUNT_PID=$!
  FILE=$MNT/d/x
  wait_file "$FILE" || return 1
  PIDS=$MOUNT_PID
}

# The FUSE ceiling: an in-memory file of CEIL_SIZE bytes, the same
# kernel read-ahead as the daemon sets for itself (1 MiB, needs root).
CEIL_SIZE=0
CEIL_MODE=copy
mount_ceiling () {
  mkdir -p "$MNT/c"
  fusermount3 -uz "$MNT/c" 2>/dev/null || true   # a stale one of a killed run
  "$CEILING" "$CEIL_MODE" "$CEIL_SIZE" "$MNT/c" 2> "$RUN/ceiling.log" &
  MOUNT_PID=$!
  FILE=$MNT/c/img
  wait_file "$FILE" || return 1
  local dev
  dev=$(mountpoint -d "$MNT/c" 2>/dev/null || true)
  [ -n "$dev" ] && echo 1024 > "/sys/class/bdi/$dev/read_ahead_kb" 2>/dev/null || true
  PIDS=$MOUNT_PID
}

rss_kib () {   # sum of VmHWM of PIDS
  local total=0 p v
  for p in $PIDS; do
    v=$(awk '/^VmHWM:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
    total=$((total + ${v:-0}))
  done
  echo "$total"
}

cpu_s () {   # user + system seconds of PIDS so far
  local total=0 p v tck
  tck=$(getconf CLK_TCK)
  for p in $PIDS; do
    v=$(bench_cpu_ticks "/proc/$p/stat")
    total=$((total + ${v:-0}))
  done
  echo "$total $tck" | awk '{printf "%.2f", $1 / $2}'
}

umount_it () {
  local d
  for d in "$MNT/x" "$MNT/d" "$MNT/c"; do
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

# ---- measurements ---------------------------------------------------------

now () { date +%s.%N; }

# Time from starting the mount to the first 4 KiB read.
ttfb () {   # mountfn URL args...
  local fn=$1; shift
  local t0 t1
  t0=$(now)
  LAST_RSS=0
  if ! $fn "$@"; then umount_it; RESULT=refused; return; fi
  if ! dd if="$FILE" of=/dev/null bs=4k count=1 status=none 2>/dev/null; then
    umount_it; RESULT=refused; return
  fi
  t1=$(now)
  LAST_RSS=$(rss_kib)
  umount_it
  RESULT=$(echo "$t0 $t1" | awk '{printf "%.3f", $2 - $1}')
}

# Cold sequential read of the whole image: MB/s; sets LAST_RSS and
# LAST_CPU (empty when the read failed).
seqread () {   # mountfn URL args...
  local fn=$1; shift
  local t0 t1 bytes
  LAST_RSS=0
  LAST_CPU=
  if ! $fn "$@"; then umount_it; RESULT=refused; return; fi
  bytes=$(stat -c %s "$FILE")
  t0=$(now)
  if ! dd if="$FILE" of=/dev/null bs=1M status=none 2>/dev/null; then
    LAST_RSS=$(rss_kib); umount_it; RESULT=EIO; return
  fi
  t1=$(now)
  LAST_RSS=$(rss_kib)
  LAST_CPU=$(cpu_s)
  umount_it
  RESULT=$(echo "$t0 $t1 $bytes" | awk '{printf "%.1f", $3 / ($2 - $1) / 1e6}')
}

# 4 KiB random reads, psync O_DIRECT: IOPS.
randread () {   # jobs mountfn URL args...
  local jobs=$1 fn=$2; shift 2
  local out
  LAST_RSS=0
  if ! $fn "$@"; then umount_it; RESULT=refused; return; fi
  out=$(fio --name=rr --filename="$FILE" --readonly --rw=randread --bs=4k \
          --ioengine=psync --direct=1 --numjobs="$jobs" --group_reporting \
          --time_based --runtime="$RUNTIME" --randrepeat=1 \
          --output-format=json 2>/dev/null || true)
  LAST_RSS=$(rss_kib)
  umount_it
  RESULT=$(echo "$out" | /usr/bin/python3 -c 'import json,sys
try:
    print("%.1f" % json.load(sys.stdin)["jobs"][0]["read"]["iops"])
except Exception:
    print("error")')
}

xz_limit () {   # FILE [RAW] -> MB/s of xz -T2 -dc; its CPU s in $RUN/xz.cpu
  local t0 t1 bytes
  bytes=$(stat -c %s "${2:-$IMG/fs.img}")
  t0=$(now)
  /usr/bin/time -f "%U %S" -o "$RUN/xz.time" xz -T2 -dc "$1" > /dev/null
  t1=$(now)
  awk '{printf "%.2f", $1 + $2}' "$RUN/xz.time" > "$RUN/xz.cpu"
  echo "$t0 $t1 $bytes" | awk '{printf "%.1f", $3 / ($2 - $1) / 1e6}'
}

ratio () {   # a b higher_is_better -> a/b (or b/a)
  /usr/bin/python3 -c '
import sys
a, b, hib = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
try:
    a, b = float(a), float(b)
    print("%.2fx" % ((a / b) if hib else (b / a)))
except (ValueError, ZeroDivisionError):
    print("-")' "$1" "$2" "$3"
}

# The smaller of two CPU times (empty = none).
lowest () {
  if [ -z "$1" ]; then echo "$2"
  elif [ -z "$2" ]; then echo "$1"
  else echo "$1 $2" | awk '{print ($1 < $2) ? $1 : $2}'; fi
}

# The larger of two rates ("refused"/"EIO" lose to any number).
best () {
  /usr/bin/python3 -c '
import sys
def num(x):
    try:
        return float(x)
    except ValueError:
        return -1.0
a, b = sys.argv[1], sys.argv[2]
print(a if num(a) >= num(b) else b)' "$1" "$2"
}

ROWS=()
row () {   # name chain diskshelf higher_is_better unit
  ROWS+=("$1|$2|$3|$(ratio "$3" "$2" "$4")|$5")
}

# ---- run ------------------------------------------------------------------

make_images
make_vm_images
[ "${IMAGES_ONLY:-0}" = 1 ] && exit 0
start_nginx
ONE=http://127.0.0.1:$PORT/fs.img.1blk.xz
CACHE=$RUN/diskcache
log "images: $(stat -c %s "$IMG/fs.img") bytes raw, $(stat -c %s "$IMG/fs.img.xz") multi-block, $(stat -c %s "$IMG/fs.img.1blk.xz") one block; vm $(stat -c %s "$IMG/vm.img") raw, $(stat -c %s "$IMG/vm.img.4M.xz") in 4 MiB blocks, $(stat -c %s "$IMG/vm.img.24M.xz") in 24 MiB blocks"

# The shapes: name, compressed file in $IMG, raw image.
shape_file () { case $1 in filled) echo fs.img.xz;; vm-4M) echo vm.img.4M.xz;; vm-24M) echo vm.img.24M.xz;; esac; }
shape_raw () { case $1 in filled) echo "$IMG/fs.img";; *) echo "$IMG/vm.img";; esac; }

# The ceiling of a size, measured once per size and mode (best of 2).
declare -A CEIL
ceiling () {   # raw mode -> sets CEIL_RESULT (MB/s)
  local key="$(stat -c %s "$1"):$2" r=0 i
  if [ -z "${CEIL[$key]:-}" ]; then
    CEIL_SIZE=$(stat -c %s "$1"); CEIL_MODE=$2
    for i in 1 2; do seqread mount_ceiling; r=$(best "$r" "$RESULT"); done
    CEIL[$key]=$r
  fi
  CEIL_RESULT=${CEIL[$key]}
}

# The cold sequential subjects: the chain, diskshelf, and BASE_BIN's
# diskshelf when given.  One read of one subject keeps its best rate,
# highest peak RSS (KiB) and lowest CPU seconds in RATE, PEAK and CPU.
SUBJECTS="chain ds${BASE:+ base}"
declare -A RATE PEAK CPU
seq_subject () {   # who URL
  local who=$1 url=$2 ds=$DS
  case $who in
    chain) seqread mount_chain "$url";;
    ds) seqread mount_ds "$url" --cache-dir=none;;
    base) DS=$BASE; seqread mount_ds "$url" --cache-dir=none; DS=$ds;;
  esac
  RATE[$who]=$(best "${RATE[$who]:-0}" "$RESULT")
  PEAK[$who]=$(( LAST_RSS > ${PEAK[$who]:-0} ? LAST_RSS : ${PEAK[$who]:-0} ))
  CPU[$who]=$(lowest "${CPU[$who]:-}" "$LAST_CPU")
}

SUMMARY=()
for shape in $SHAPES; do
  url=http://127.0.0.1:$PORT/$(shape_file "$shape")
  file=$IMG/$(shape_file "$shape")
  raw=$(shape_raw "$shape")
  if [ "$ROWS_WANTED" != rand ]; then
    log "$shape: time to first 4 KiB"
    ttfb mount_chain "$url"; c=$RESULT; ttfb mount_ds "$url" --cache-dir=none; d=$RESULT
    row "$shape: time to first 4 KiB (s)" "$c" "$d" 0 s
    log "$shape: cold sequential (best of 2, interleaved with the xz limit)"
    limit=0; xcpu=; RATE=(); PEAK=(); CPU=()
    for _ in 1 2; do
      l=$(xz_limit "$file" "$raw"); limit=$(best "$limit" "$l")
      xcpu=$(lowest "$xcpu" "$(cat "$RUN/xz.cpu")")
      for who in $SUBJECTS; do seq_subject "$who" "$url"; done
    done
    c=${RATE[chain]}; d=${RATE[ds]}; crss=${PEAK[chain]}; drss=${PEAK[ds]}
    ccpu=${CPU[chain]}; dcpu=${CPU[ds]}
    log "$shape: FUSE ceiling"
    ceiling "$raw" copy; ceil=$CEIL_RESULT
    row "$shape: cold sequential (MB/s)" "$c" "$d" 1 MB/s
    row "$shape: peak RSS in seq read (MiB)" "$((crss / 1024))" "$((drss / 1024))" 0 MiB
    row "$shape: diskshelf vs xz -T2 -dc ($limit MB/s)" "$limit" "$d" 1 MB/s
    row "$shape: diskshelf vs FUSE ceiling ($ceil MB/s)" "$ceil" "$d" 1 MB/s
    row "$shape: CPU s of the serving processes, seq read" "$ccpu" "$dcpu" 0 s
    row "$shape: CPU s, xz -T2 -dc vs diskshelf" "$xcpu" "$dcpu" 0 s
    SUMMARY+=("$shape|$d|$(ratio "$d" "$c" 1)|$(ratio "$d" "$limit" 1)|$(ratio "$d" "$ceil" 1)|$((crss / 1024))|$((drss / 1024))|$dcpu|$xcpu")
    if [ -n "$BASE" ]; then
      bd=${RATE[base]}; brss=${PEAK[base]}; bcpu=${CPU[base]}
      row "$shape: BASE_BIN cold sequential (MB/s)" "$bd" "$d" 1 MB/s
      row "$shape: BASE_BIN peak RSS in seq read (MiB)" "$((brss / 1024))" "$((drss / 1024))" 0 MiB
      row "$shape: BASE_BIN CPU s, seq read" "$bcpu" "$dcpu" 0 s
      SUMMARY+=("$shape (base)|$bd|$(ratio "$bd" "$c" 1)|$(ratio "$bd" "$limit" 1)|$(ratio "$bd" "$ceil" 1)|$((crss / 1024))|$((brss / 1024))|$bcpu|$xcpu")
    fi
  fi
  if [ "$ROWS_WANTED" != seq ]; then
    log "$shape: random 4 KiB, 1 reader"
    randread 1 mount_chain "$url"; c=$RESULT; randread 1 mount_ds "$url" --cache-dir=none; d=$RESULT
    row "$shape: 4K random, 1 reader (IOPS)" "$c" "$d" 1 IOPS
    log "$shape: random 4 KiB, 4 readers"
    randread 4 mount_chain "$url"; c=$RESULT; randread 4 mount_ds "$url" --cache-dir=none; d=$RESULT
    row "$shape: 4K random, 4 readers (IOPS)" "$c" "$d" 1 IOPS
  fi
done

# The FUSE reply modes, on the VM size: what a low-level reply from
# cached memory (nocopy) or a splice from a file (splice) could gain.
if [ "$ROWS_WANTED" != rand ] && [ -n "$SHAPES" ]; then
  log "FUSE ceiling reply modes"
  ceiling "$IMG/vm.img" copy; cc=$CEIL_RESULT
  ceiling "$IMG/vm.img" nocopy; cn=$CEIL_RESULT
  ceiling "$IMG/vm.img" splice; cs=$CEIL_RESULT
  row "ceiling $VM_SIZE: nocopy vs copy (MB/s)" "$cc" "$cn" 1 MB/s
  row "ceiling $VM_SIZE: splice vs copy (MB/s)" "$cc" "$cs" 1 MB/s
fi

if [ "$ROWS_WANTED" = all ]; then
limit1=$(xz_limit "$IMG/fs.img.1blk.xz")
log "single block: the chain refuses by default"
ttfb mount_chain "$ONE"; c=$RESULT
rm -rf "$CACHE"
log "single block: diskshelf with a disk cache"
ttfb mount_ds "$ONE" --cache-dir="$CACHE"; d=$RESULT
row "1-block: time to first 4 KiB (s)" "$c" "$d" 0 s
log "single block: chain with xz-max-block=8G (whole image in RAM)"
seqread mount_chain "$ONE" xz-max-block=8G; c=$RESULT; crss=$LAST_RSS
rm -rf "$CACHE"
seqread mount_ds "$ONE" --cache-dir="$CACHE"; d=$RESULT; drss=$LAST_RSS
row "1-block: cold sequential (MB/s), chain xz-max-block=8G" "$c" "$d" 1 MB/s
row "1-block: peak RSS in seq read (MiB)" "$((crss / 1024))" "$((drss / 1024))" 0 MiB
row "1-block: diskshelf vs xz -T2 -dc ($limit1 MB/s)" "$limit1" "$d" 1 MB/s
gets=$(grep -c "^GET /fs.img.1blk.xz" "$RUN/nginx/access.log" || true)
seqread mount_ds "$ONE" --cache-dir="$CACHE"; d=$RESULT
gets2=$(grep -c "^GET /fs.img.1blk.xz" "$RUN/nginx/access.log" || true)
row "1-block: after restart, from disk cache (MB/s)" "-" "$d" 1 MB/s
row "1-block: GETs of the .xz after restart" "-" "$((gets2 - gets))" 0 n
randread 4 mount_ds "$ONE" --cache-dir="$CACHE"; d=$RESULT
row "1-block: 4K random, 4 readers, disk cache (IOPS)" "-" "$d" 1 IOPS

# Warm reads against the disk-cache file itself, back to back, so both
# find the cache file in the same page-cache state.
log "single block: warm through the mount vs dd of the disk-cache file"
raw_bytes=$(stat -c %s "$IMG/fs.img")
seqread mount_ds "$ONE" --cache-dir="$CACHE"; d=$RESULT
f=$(bench_dd_cache_data "$CACHE" "$raw_bytes")
row "1-block warm: dd of the cache file vs the mount (MB/s)" "$f" "$d" 1 MB/s
fi

# Ten entries of the filled image, each its own URL, read at once: the
# daemon's peak RSS against --memory-cache-size + 64 MiB, and the blocks
# decoded against the least (each 16 MiB block read once), with
# DISKSHELF_BIN and, when given, BASE_BIN in the same run.
ten_at_once () {   # BIN label
  local bin=$1 label=$2 i t0 t1 ok peak base_rss total decoded evictions waits
  rm -rf "$RUN/catalog"; mkdir -p "$RUN/catalog" "$MNT/d"
  for i in $(seq 0 9); do
    echo "source = http://127.0.0.1:$PORT/ten$i.img.xz" > "$RUN/catalog/ten$i.conf"
  done
  "$bin" -f --memory-cache-size=128M --cache-dir=none "$RUN/catalog" "$MNT/d" 2> "$RUN/ds.log" &
  MOUNT_PID=$!; PIDS=$MOUNT_PID
  if ! wait_file "$MNT/d/ten9"; then
    umount_it
    row "${label}ten at once: peak RSS (MiB)" "192" "refused" 0 MiB
    return
  fi
  base_rss=$(rss_kib)
  t0=$(now)
  local readers=()
  for i in $(seq 0 9); do
    dd if="$MNT/d/ten$i" of=/dev/null bs=1M count="$TEN_MB" status=none &
    readers+=($!)
  done
  ok=ok
  for i in "${readers[@]}"; do wait "$i" || ok=EIO; done
  t1=$(now)
  peak=$(rss_kib)
  # memory-cache: USED of MAX bytes, N blocks decoded (Z zero), H hits,
  # M misses, E evictions; memory-cache-waits: W reads waited ...
  read -r decoded evictions < <(awk '/^memory-cache:/ {print $6, $15; exit}' \
                                  "$MNT/d/.diskshelf-status" 2>/dev/null || echo "- -")
  waits=$(awk '/^memory-cache-waits:/ {print $2; exit}' "$MNT/d/.diskshelf-status" 2>/dev/null)
  umount_it
  total=$(echo "$t0 $t1 $((TEN_MB * 10))" | awk '{printf "%.1f", $3 * 1048576 / ($2 - $1) / 1e6}')
  row "${label}ten at once: peak RSS vs 128M + 64 MiB (MiB) [$ok]" "192" "$((peak / 1024))" 0 MiB
  row "${label}ten at once: RSS before reading (MiB)" "-" "$((base_rss / 1024))" 0 MiB
  row "${label}ten at once: all ten together (MB/s)" "-" "$total" 1 MB/s
  row "${label}ten at once: 16 MiB blocks decoded, least vs done" "$(( (TEN_MB + 15) / 16 * 10 ))" "${decoded:--}" 0 n
  row "${label}ten at once: evictions; reads that waited for room" "-" "${evictions:--}; ${waits:--}" 0 n
}

if [ "$ROWS_WANTED" = all ] || [ "$ROWS_WANTED" = ten ]; then
  TEN_MB=${TEN_MB:-64}
  for i in $(seq 0 9); do ln -sf fs.img.xz "$IMG/ten$i.img.xz"; done
  log "ten entries read at once (first $TEN_MB MiB of each)"
  ten_at_once "$DS" ""
  if [ -n "$BASE" ]; then
    log "ten entries read at once, BASE_BIN"
    ten_at_once "$BASE" "BASE_BIN "
  fi
  rm -f "$IMG"/ten*.img.xz
fi

echo
echo "xz benchmark: SIZE=$SIZE VM_SIZE=$VM_SIZE RUNTIME=${RUNTIME}s, $(nproc) cores, $(date -u +%Y-%m-%d)"
echo "shapes: filled = ext4 $SIZE of real files, xz -T2 --block-size=16MiB;"
echo "        vm-4M / vm-24M = mostly empty ext4 $VM_SIZE, 4 MiB blocks / xz -T0 (24 MiB blocks);"
echo "        1-block = the filled image, xz -T1 -1"
printf '%-56s %12s %12s %8s\n' "row" "chain" "diskshelf" "ratio"
for r in "${ROWS[@]}"; do
  IFS='|' read -r name a b q unit <<< "$r"
  printf '%-56s %12s %12s %8s\n' "$name" "$a" "$b" "$q"
done
echo "(ratio: diskshelf/chain for rates, chain/diskshelf for times and RSS; >1 is better;"
echo " on the 1-block warm row the chain column is dd of the disk-cache file, target >= 0.90x;"
echo " on the ten-at-once peak row it is the bound, target >= 1.00x)"
if [ ${#SUMMARY[@]} -gt 0 ]; then
  echo
  echo "cold sequential, per shape (targets: >= 1.8x the chain, >= 0.85 of xz -T2 -dc)"
  printf '%-14s %8s %8s %10s %10s %10s %10s %8s %8s\n' shape "MB/s" "x chain" "of xz -T2" "of ceiling" "RSS chain" "RSS ds" "CPU ds" "CPU xz"
  for r in "${SUMMARY[@]}"; do
    IFS='|' read -r sh d rc rl rf cr dr dc xc <<< "$r"
    printf '%-14s %8s %8s %10s %10s %10s %10s %8s %8s\n' "$sh" "$d" "$rc" "${rl%x}" "${rf%x}" "$cr" "$dr" "$dc" "$xc"
  done
  echo "(RSS in MiB; CPU: user + system seconds of the serving process / of xz -T2 -dc, lowest of two runs)"
fi
