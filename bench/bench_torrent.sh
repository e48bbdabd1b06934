#!/bin/bash
# Benchmark: a torrent seeded by aria2c (tracker: opentracker) read
#   - through bt-get (the bt/ library alone, 4 and 16 reader threads);
#   - through a diskshelf mount, btfs, and nbdfuse + nbdkit's torrent
#     plugin, in the same run on the same swarm, with the ratios
#     (issue 11's table).
#
#   bench/bench_torrent.sh                    # 1 GiB, 256 KiB pieces
#   SIZE_MB=128 RUNTIME=5 bench/bench_torrent.sh   # a quick run
#   BASE_BIN=/path/to/old/diskshelf bench/bench_torrent.sh  # before/after
#
# Env: SIZE_MB (1024), PIECE_LOG (18: 256 KiB pieces), RUNTIME (10: s of
# random reads), TIMEOUT (10: the diskshelf entry's `timeout =` in the
# kill row; the other rows keep the default, 60 s),
# DS_MEMORY (the daemon's --memory-cache-size; empty: its default 256M),
# SMALL_MEMORY (64M: a second diskshelf column, "ds-small", run with
# that --memory-cache-size; empty: none), BASE_BIN (an older diskshelf,
# column "base", measured in the same run), ONLY="diskshelf btfs" (some
# tools), ROWS="first cat warm rand kill" (some rows), CAT_ROUNDS (2),
# KILL_AFTER_MB (32), HANG_S (60), KEEP_WORK=1.
#
# Rows per tool, each on a fresh mount and data directory:
#   first: mount command -> file visible; mount command -> first 4 KiB
#     at a random 4 KiB-aligned offset (the same for every tool); MiB
#     downloaded 5 s after that single read (diskshelf: its status;
#     btfs and nbdkit: du of their data directory).
#   cat: a full sequential `cat | bench_sha256`, CAT_ROUNDS times with the
#     tools in alternating order, each tool's fastest round kept; timed
#     from the file being visible and from the mount command (nbdfuse
#     shows the file only once nbdkit has the swarm going, and by then it
#     has fetched much of the torrent); MB/s; peak RSS (VmHWM; nbdfuse +
#     nbdkit summed, the highest round); diskshelf's CPU seconds by
#     thread name, logged.
#     For diskshelf also its configured memory bounds (below) and the RSS
#     beyond them, target <= 64 MiB.
#   rand: 4 readers of 4 KiB at random offsets for RUNTIME s from the file
#     being visible (bench/torrent_reads.py; every read checked against
#     the source): reads/s.
#   warm (diskshelf columns only): a fresh mount reads the whole file
#     once (into the disk cache), then a second daemon on the same cache
#     directory: MB/s of `dd bs=1M` of the file through the mount (best
#     of two) against `dd` of the cache's data file itself (best of two,
#     the same page-cache state), the share (issue 14: >= 0.9), and
#     whether the reads went through FUSE passthrough (status:
#     passthrough-opens >= 1 and reads: 0).
#   kill: the seeder (restarted with a 16 MiB/s upload cap, so the read
#     is still under way) is killed with SIGKILL once a sequential reader
#     has KILL_AFTER_MB MiB; the row says what the reader saw and how
#     long after the kill: "EIO 10.4 s", "done 3.0 s" (it had every
#     piece), or "hung >60 s" (killed after HANG_S s).  diskshelf's
#     target: EIO within the entry's timeout (TIMEOUT).
#
# diskshelf's memory bounds for a torrent entry: the remote-bytes
# engine's chunk buffers (a quarter of --memory-cache-size, 64 MiB by
# default) and the session's read-ahead pieces (bt_prefetch_piece: at
# most 32 MiB).  The decoded-block cache (the rest of
# --memory-cache-size) serves xz only and stays empty here.
#
# Isolation: btfs and nbdkit's plugin (libtorrent) start DHT and local
# service discovery and offer no switch to stop them, so as root the whole
# script re-runs itself inside `unshare -n` with only `lo` up: nothing can
# leave the machine.  The seeder listens on 127.0.0.2 (libtorrent folds all
# peers of one IP into one entry, so with the seeder and itself both on
# 127.0.0.1 btfs never reaches the seeder; see
# ../shared/reference/anchor-bench/TORRENT-RESULTS.md).  Without root, only
# the bt-get and diskshelf rows run.  Everything started here is stopped by
# PID at exit; every read runs under `timeout`.
set -euo pipefail

SIZE_MB=${SIZE_MB:-1024}
PIECE_LOG=${PIECE_LOG:-18}
RUNTIME=${RUNTIME:-10}
TIMEOUT=${TIMEOUT:-10}
DS_MEMORY=${DS_MEMORY:-}
SMALL_MEMORY=${SMALL_MEMORY-64M}
KILL_AFTER_MB=${KILL_AFTER_MB:-32}
HANG_S=${HANG_S:-60}
ROWS=${ROWS:-first cat warm rand kill}
CAT_ROUNDS=${CAT_ROUNDS:-2}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$(realpath "${DISKSHELF_BIN:-$ROOT/build/diskshelf}")
BASE=${BASE_BIN:+$(realpath "$BASE_BIN")}
BTGET=$(dirname "$BIN")/bt/bt-get
READS="/usr/bin/python3 $ROOT/bench/torrent_reads.py"

. "$ROOT/bench/lib.sh"
export DISKSHELF_BIN="$BIN" ${BASE:+BASE_BIN="$BASE"}
bench_netns_enter "$0" "$@"
COMPARE=
if [ -n "${BENCH_IN_NETNS:-}" ]; then
  if ! bench_netns_only_lo; then
    echo "bench: refusing to run the competing tools: interfaces other than lo exist" >&2
    exit 1
  fi
  COMPARE=1
fi
has_row () { [[ " $ROWS " == *" $1 "* ]]; }

WORK=$(mktemp -d /var/tmp/bench-torrent.XXXXXX)
PIDS=()
MOUNTED=()

cleanup () {
  for m in "${MOUNTED[@]}"; do fusermount3 -uz "$m" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

hwm_kb () { awk '/^VmHWM:/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
log () { echo "bench: $*" >&2; }

SEED_IP=127.0.0.1
[ -n "$COMPARE" ] && SEED_IP=127.0.0.2
SEED_PORT=$(bench_free_port)

mkdir -p "$WORK/data" "$WORK/tracker"
head -c $((SIZE_MB << 20)) /dev/urandom > "$WORK/data/big.bin"
SRC=$WORK/data/big.bin
want=$(bench_sha256 < "$SRC")
TP=$(bench_free_port)
mktorrent -l "$PIECE_LOG" -a "http://127.0.0.1:$TP/announce" -o "$WORK/big.torrent" \
  "$SRC" >/dev/null
hash=$(aria2c -S "$WORK/big.torrent" | awk '/^Info Hash:/{print $3}')
echo "$hash" > "$WORK/tracker/whitelist.txt"
chmod 755 "$WORK" "$WORK/tracker"; chmod 644 "$WORK/tracker/whitelist.txt"
(cd "$WORK/tracker" && exec opentracker -i 127.0.0.1 -p "$TP" -P "$TP" -d "$WORK/tracker" \
   -u nobody -w whitelist.txt) >"$WORK/opentracker.log" 2>&1 &
PIDS+=($!)

# start_seeder [ARIA2 OPTION...]: aria2c seeding on SEED_IP:SEED_PORT
# (the same address each time); sets SEED_PID.
start_seeder () {
  aria2c --no-conf --enable-dht=false --enable-dht6=false --bt-enable-lpd=false \
    --enable-peer-exchange=false --disable-ipv6=true --interface="$SEED_IP" \
    --file-allocation=none --summary-interval=0 --seed-ratio=0.0 \
    --dir="$WORK/data" --listen-port="$SEED_PORT" --log="$WORK/aria2.log" --log-level=info \
    "$@" "$WORK/big.torrent" >>"$WORK/aria2.out" 2>&1 &
  SEED_PID=$!
  PIDS+=("$SEED_PID")
  for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/$SEED_IP/$SEED_PORT") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "bench: the seeder did not start (see $WORK/aria2.log)" >&2
  exit 1
}
start_seeder --check-integrity=true
for _ in $(seq 1 300); do
  curl -s "http://127.0.0.1:$TP/scrape?info_hash=$(sed 's/../%&/g' <<<"$hash")" \
    | grep -aq 'completei1e' && break
  sleep 0.2
done

echo "torrent: $SIZE_MB MiB, pieces of $((1 << PIECE_LOG >> 10)) KiB, one aria2c seeder on $SEED_IP"
if [ -z "${ONLY:-}" ]; then
  for threads in 4 16; do
    rm -f "$WORK/out.bin"
    t=$(bench_now)
    timeout 300 "$BTGET" --out "$WORK/out.bin" --threads "$threads" --timeout 60 \
      "$WORK/big.torrent" >/dev/null
    s=$(bench_since "$t")
    got=$(bench_sha256 < "$WORK/out.bin")
    [ "$got" = "$want" ] || { echo "bt-get: WRONG DATA"; exit 1; }
    printf '%-44s %7s s  %6.1f MB/s\n' "bt-get, all pieces, $threads readers" "$s" \
      "$(awk -v s="$s" -v m="$SIZE_MB" 'BEGIN{print m*1.048576/s}')"
  done
  rm -f "$WORK/out.bin"
fi

# ---- the mounts ------------------------------------------------------------
# start_TOOL DIR: mount fresh under DIR; sets FILE (the image), PID (the
# process whose RSS counts; for nbdkit also PID2) and DATA (what to `du`).

start_ds () {   # BINARY MEMORY-CACHE-SIZE DIR
  local d=$3
  mkdir -p "$d/cat" "$d/mnt"
  printf 'source = %s\n' "$WORK/big.torrent" > "$d/cat/big.img.conf"
  if [ -n "${IN_KILL_ROW:-}" ]; then printf "timeout = %s\n" "$TIMEOUT" >> "$d/cat/big.img.conf"; fi
  "$1" -f --cache-dir="$d/cache" ${2:+--memory-cache-size="$2"} "$d/cat" "$d/mnt" \
    >"$d/log" 2>&1 &
  PID=$!; PID2=; PIDS+=("$PID"); MOUNTED+=("$d/mnt")
  FILE=$d/mnt/big.img; DATA=
}
start_diskshelf () { start_ds "$BIN" "$DS_MEMORY" "$1"; }
start_base () { start_ds "$BASE" "$DS_MEMORY" "$1"; }
start_ds-small () { start_ds "$BIN" "$SMALL_MEMORY" "$1"; }
start_btfs () {
  mkdir -p "$1/mnt" "$1/data"
  btfs -f --data-directory="$1/data" --min-port=17000 --max-port=17010 \
    "$WORK/big.torrent" "$1/mnt" >"$1/log" 2>&1 &
  PID=$!; PID2=; PIDS+=("$PID"); MOUNTED+=("$1/mnt")
  FILE=$1/mnt/big.bin; DATA=$1/data
}
start_nbdkit () {
  mkdir -p "$1/mnt" "$1/data"
  nbdfuse -r "$1/mnt/x" --command nbdkit -s torrent "$WORK/big.torrent" cache="$1/data" \
    listen-interfaces=127.0.0.1:17020 outgoing-interfaces=127.0.0.1 >"$1/log" 2>&1 &
  PID=$!; PIDS+=("$PID"); MOUNTED+=("$1/mnt")
  FILE=$1/mnt/x; DATA=$1/data
}
is_ds () { [[ "$1" == diskshelf || "$1" == base || "$1" == ds-small ]]; }
wait_file () {   # seconds
  for _ in $(seq 1 $(($1 * 20))); do
    [ -e "$FILE" ] && return 0
    kill -0 "$PID" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}
rss_mb () {
  local kb; kb=$(hwm_kb "$PID")
  if [ -z "$PID2" ]; then PID2=$(pgrep -P "$PID" nbdkit | head -1 || true); fi
  [ -n "$PID2" ] && kb=$((kb + $(hwm_kb "$PID2")))
  awk -v k="$kb" 'BEGIN{printf "%.0f", k/1024}'
}
downloaded_mb () {   # TOOL DIR
  if is_ds "$1"; then
    "$BIN" status "$2/mnt" 2>/dev/null | awk '/^torrent-fetched:/{printf "%.1f", $4/1048576}'
  else
    du -sk "$DATA" | awk '{printf "%.1f", $1/1024}'
  fi
}
stop_it () {   # DIR
  # nbdfuse's nbdkit, found before nbdfuse goes: once orphaned it is no
  # longer its child (a hung nbdkit outlived the kill row this way).
  if [ -z "${PID2:-}" ]; then PID2=$(pgrep -P "$PID" nbdkit | head -1 || true); fi
  fusermount3 -u "$1/mnt" 2>/dev/null || fusermount3 -u "$1/mnt/x" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
  kill "$PID" 2>/dev/null || true
  sleep 0.2
  kill -9 "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
  if [ -n "${PID2:-}" ]; then
    # It may ignore SIGTERM while it waits for a dead seeder.
    kill "$PID2" 2>/dev/null || true
    for _ in $(seq 1 20); do kill -0 "$PID2" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$PID2" 2>/dev/null || true
  fi
  fusermount3 -uz "$1/mnt" 2>/dev/null || fusermount3 -uz "$1/mnt/x" 2>/dev/null || true
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$1"
}
# The configured memory bounds of a diskshelf torrent entry, MiB: a
# quarter of --memory-cache-size for the engine, 32 MiB of session
# read-ahead pieces (see the header).
bounds_mb () {   # MEMORY-CACHE-SIZE (empty: 256M)
  /usr/bin/python3 - "${1:-256M}" <<'PY'
import sys
v = sys.argv[1].strip().upper()
mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
n = int(v[:-1]) * mult[v[-1]] if v[-1] in mult else int(v)
print(max(n // 4, 8 << 20) // (1 << 20) + 32)
PY
}
memory_of () {   # TOOL
  case $1 in
    diskshelf|base) echo "${DS_MEMORY:-256M}" ;;
    ds-small) echo "$SMALL_MEMORY" ;;
  esac
}

# One random 4 KiB block, the same for every tool.
off=$(/usr/bin/python3 -c "import random; print(random.randrange($SIZE_MB * 256))")
first_want=$(dd if="$SRC" bs=4096 skip="$off" count=1 status=none | sha256sum)
TOOLS=(diskshelf)
[ -n "$BASE" ] && TOOLS+=(base)
[ -n "$SMALL_MEMORY" ] && TOOLS+=(ds-small)
[ -n "$COMPARE" ] && TOOLS+=(btfs nbdkit)
if [ -n "${ONLY:-}" ]; then read -r -a TOOLS <<<"$ONLY"; fi
declare -A VISIBLE FIRST FETCHED CAT CATALL MBS RSS BOUND BEYOND RAND RANDMB KILL \
  WARM WARMDD WARMSHARE WARMPT
for tool in "${TOOLS[@]}"; do
  for r in VISIBLE FIRST FETCHED CAT CATALL MBS RSS BOUND BEYOND RAND RANDMB KILL \
           WARM WARMDD WARMSHARE WARMPT; do
    declare -n a=$r; a[$tool]=-; unset -n a
  done
done

# One timed `cat | bench_sha256` of TOOL's file on a fresh mount; keeps the
# round's figures when they beat the tool's best so far.
cat_round () {   # TOOL ROUND
  local tool=$1 d t t0 got s all
  log "$tool: sequential cat, round $2"
  bench_settle $((SIZE_MB * 2))
  d=$WORK/$tool-cat
  t0=$(bench_now)
  "start_$tool" "$d"
  if wait_file 30; then
    t=$(bench_now)
    got=$(timeout 600 cat "$FILE" | bench_sha256 || true)
    s=$(bench_since "$t"); all=$(bench_since "$t0")
    if [ "$got" != "$want" ]; then
      CAT[$tool]=failed; CATALL[$tool]=failed; MBS[$tool]=failed
    elif [ "${CAT[$tool]}" != failed ] \
         && { [ "${CAT[$tool]}" = - ] || awk -v a="$s" -v b="${CAT[$tool]}" 'BEGIN{exit !(a < b)}'; }; then
      CAT[$tool]=$s; CATALL[$tool]=$all
      MBS[$tool]=$(awk -v s="$s" -v m="$SIZE_MB" 'BEGIN{printf "%.0f", m*1.048576/s}')
    fi
    log "$tool: round $2: $s s from the file visible, $all s from the mount command"
    local rss; rss=$(rss_mb)
    [ "${RSS[$tool]}" = - ] || [ "$rss" -gt "${RSS[$tool]}" ] && RSS[$tool]=$rss
    if is_ds "$tool"; then
      log "$tool: CPU by thread after the cat: $(bench_thread_cpu "$PID")"
      BOUND[$tool]=$(bounds_mb "$(memory_of "$tool")")
      BEYOND[$tool]=$((RSS[$tool] - BOUND[$tool]))
    fi
  fi
  stop_it "$d"
}

ratio () { awk -v a="$1" -v b="$2" 'BEGIN{ if (a+0 > 0 && b+0 > 0) printf "%.2f", a/b; else printf "-" }'; }

# The warm row: a daemon fills its disk cache with one whole read, then
# a second daemon on the same cache directory is read with dd and
# compared with dd of the cache's data file.
warm_round () {   # TOOL
  local tool=$1 d=$WORK/$1-warm bytes=$((SIZE_MB << 20)) a b
  log "$tool: warm read, a second daemon on a filled disk cache"
  "start_$tool" "$d"
  if ! wait_file 30 || ! cat "$FILE" > /dev/null; then
    WARM[$tool]=failed; stop_it "$d"; return
  fi
  KEEP_WORK=1 stop_it "$d"
  bench_settle
  "start_$tool" "$d"
  if ! wait_file 30; then WARM[$tool]=failed; stop_it "$d"; return; fi
  # dd of the data file first: both reads then start with it in the
  # page cache.
  a=$(bench_dd_cache_data "$d/cache" "$bytes"); b=$(bench_dd_mbs "$FILE" "$bytes")
  WARMDD[$tool]=$(bench_max "$a" "$(bench_dd_cache_data "$d/cache" "$bytes")")
  WARM[$tool]=$(bench_max "$b" "$(bench_dd_mbs "$FILE" "$bytes")")
  WARMSHARE[$tool]=$(ratio "${WARM[$tool]}" "${WARMDD[$tool]}")
  WARMPT[$tool]=no
  if grep -q '^passthrough-opens: [1-9]' "$d/mnt/.diskshelf-status" \
     && grep -q '^reads: 0$' "$d/mnt/.diskshelf-status"; then
    WARMPT[$tool]=yes
  fi
  log "$tool: warm: ${WARM[$tool]} MB/s through the mount, ${WARMDD[$tool]} MB/s dd of the data file, passthrough ${WARMPT[$tool]}; $(grep -h '^cache-present\|^torrent-fetched' "$d/mnt/.diskshelf-status" | tr '\n' ' ')"
  stop_it "$d"
}

for tool in "${TOOLS[@]}"; do
  if has_row first; then
    log "$tool: first 4 KiB"
    bench_settle
    d=$WORK/$tool-first
    t0=$(bench_now)
    "start_$tool" "$d"
    if wait_file 30; then
      VISIBLE[$tool]=$(bench_since "$t0")
      got=$(timeout 120 dd if="$FILE" bs=4096 skip="$off" count=1 status=none | sha256sum || true)
      if [ "$got" = "$first_want" ]; then FIRST[$tool]=$(bench_since "$t0"); else FIRST[$tool]=failed; fi
      sleep 5
      FETCHED[$tool]=$(downloaded_mb "$tool" "$d")
    else
      VISIBLE[$tool]=failed; FIRST[$tool]=failed
    fi
    stop_it "$d"
  fi

  if has_row rand; then
    log "$tool: random 4 KiB reads"
    bench_settle
    d=$WORK/$tool-rand
    "start_$tool" "$d"
    if wait_file 30; then
      read -r good wrong errs took < <(timeout $((RUNTIME + 120)) $READS random "$FILE" \
        "$SRC" 4 "$RUNTIME" 1 || echo "0 0 0 0")
      if [ "$wrong" = 0 ] && [ "$errs" = 0 ] && [ "$good" -gt 0 ]; then
        RAND[$tool]=$(awk -v n="$good" -v s="$took" 'BEGIN{printf "%.0f", n/s}')
      else
        RAND[$tool]="failed"
        log "$tool: random reads: $good right, $wrong wrong, $errs failed"
      fi
      RANDMB[$tool]=$(downloaded_mb "$tool" "$d")
    fi
    stop_it "$d"
  fi
done

# The cat row in CAT_ROUNDS rounds, the tools' order reversed each round,
# each tool's best round kept: on this VM whichever tool runs first in a
# run was measured up to 1.4x slower than the same binary run second.
if has_row cat; then
  order=("${TOOLS[@]}")
  for round in $(seq 1 "$CAT_ROUNDS"); do
    for tool in "${order[@]}"; do cat_round "$tool" "$round"; done
    rev=(); for ((i = ${#order[@]} - 1; i >= 0; i--)); do rev+=("${order[i]}"); done
    order=("${rev[@]}")
  done
fi

if has_row warm; then
  for tool in "${TOOLS[@]}"; do is_ds "$tool" && warm_round "$tool"; done
fi

# The seeder dies mid-read: a sequential reader on a fresh mount, the
# seeder (capped, so the read is still going) killed once the reader has
# KILL_AFTER_MB MiB.
if has_row kill; then
  kill "$SEED_PID" 2>/dev/null || true
  wait "$SEED_PID" 2>/dev/null || true
  IN_KILL_ROW=1
  for tool in "${TOOLS[@]}"; do
    log "$tool: seeder killed mid-read"
    start_seeder --bt-seed-unverified=true --max-upload-limit=16M
    d=$WORK/$tool-kill
    "start_$tool" "$d"
    if wait_file 30; then
      prog=$WORK/progress; rm -f "$prog"
      timeout -s KILL $((HANG_S + 300)) $READS seq "$FILE" "$SRC" "$prog" >"$WORK/reader.out" 2>&1 &
      RPID=$!
      for _ in $(seq 1 600); do
        kill -0 "$RPID" 2>/dev/null || break
        [ "$(cat "$prog" 2>/dev/null || echo 0)" -ge $((KILL_AFTER_MB << 20)) ] && break
        sleep 0.05
      done
      kill -9 "$SEED_PID" 2>/dev/null || true
      wait "$SEED_PID" 2>/dev/null || true
      tk=$(bench_now)
      for _ in $(seq 1 $((HANG_S * 20))); do kill -0 "$RPID" 2>/dev/null || break; sleep 0.05; done
      s=$(bench_since "$tk")
      if kill -0 "$RPID" 2>/dev/null; then
        kill -9 "$RPID" 2>/dev/null || true
        KILL[$tool]="hung >${HANG_S}s"
      else
        read -r what errname _ < "$WORK/reader.out" || what=?
        case $what in
          error) KILL[$tool]="$errname ${s}s" ;;
          completed) KILL[$tool]="done ${s}s" ;;
          *) KILL[$tool]="$what" ;;
        esac
      fi
      wait "$RPID" 2>/dev/null || true
      log "$tool: reader: $(cat "$WORK/reader.out"), $(( $(cat "$prog" 2>/dev/null || echo 0) >> 20 )) MiB read"
    fi
    stop_it "$d"
  done
fi

OTHERS=()
for t in base btfs nbdkit; do
  for u in "${TOOLS[@]}"; do [ "$u" = "$t" ] && OTHERS+=("$t"); done
done
[[ " ${TOOLS[*]} " == *" diskshelf "* ]] || OTHERS=()
echo
printf '%-46s' "row"
for tool in "${TOOLS[@]}"; do printf ' %11s' "$tool"; done
for t in "${OTHERS[@]}"; do printf ' %10s' "ds/$t"; done
echo
row () {   # LABEL ARRAY-NAME
  local -n a=$2
  printf '%-46s' "$1"
  for tool in "${TOOLS[@]}"; do printf ' %11s' "${a[$tool]}"; done
  for t in "${OTHERS[@]}"; do printf ' %10s' "$(ratio "${a[diskshelf]}" "${a[$t]}")"; done
  echo
}
if has_row first; then
  row "mount -> file visible (s)" VISIBLE
  row "mount -> first 4 KiB at $((off / 256)) MiB (s)" FIRST
  row "MiB downloaded 5 s after that read" FETCHED
fi
if has_row cat; then
  row "sequential cat, file visible -> end (s)" CAT
  row "sequential cat, mount -> end (s)" CATALL
  row "sequential cat from file visible (MB/s)" MBS
  row "peak RSS during the cat (MiB)" RSS
  row "  diskshelf: configured memory bounds (MiB)" BOUND
  row "  diskshelf: RSS beyond them (MiB, <= 64)" BEYOND
fi
if has_row warm; then
  row "warm dd through the mount (MB/s)" WARM
  row "  dd of the disk-cache data file (MB/s)" WARMDD
  row "  share of it (>= 0.9)" WARMSHARE
  row "  through FUSE passthrough" WARMPT
fi
if has_row rand; then
  row "4 KiB random reads, 4 readers (reads/s)" RAND
  row "  MiB downloaded by then" RANDMB
fi
if has_row kill; then
  row "seeder killed: reader sees (after the kill)" KILL
fi
echo "times: lower is better; MB/s and reads/s: higher is better"
echo "diskshelf: entry timeout = $TIMEOUT s in the kill row (default 60 s elsewhere); --memory-cache-size=${DS_MEMORY:-256M (default)}${SMALL_MEMORY:+; ds-small: --memory-cache-size=$SMALL_MEMORY}"
echo "memory bounds = a quarter of --memory-cache-size (engine) + 32 MiB (session read-ahead pieces)"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (2 cores)"
