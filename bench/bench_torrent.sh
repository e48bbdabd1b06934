#!/bin/bash
# Benchmark: a torrent seeded by aria2c (tracker: opentracker), read
#   - through bt-get (the bt/ library alone, 4 and 16 reader threads);
#   - through a diskshelf mount, btfs, and nbdfuse + nbdkit's torrent
#     plugin, in the same run on the same swarm, with the ratios.
#
#   bench/bench_torrent.sh                  # 256 MiB, 256 KiB pieces
#   SIZE_MB=64 PIECE_LOG=18 bench/bench_torrent.sh
#
# Rows per tool (fresh mount and data directory each): mount command to
# the file being visible; mount command to the first 4 KiB at 200 MiB (or
# 3/4 in); bytes downloaded 5 s after that single read (diskshelf: its
# status; btfs and nbdkit: their data directory); a full sequential
# `cat | sha256sum` from a fresh mount, timed from the file being visible
# and from the mount command (nbdfuse shows the file only once nbdkit has
# the swarm going, and by then it has fetched much of the torrent); peak RSS (VmHWM; nbdfuse + nbdkit
# summed).  Every read is checked against the source's sha256, and every
# read runs under `timeout`.
#
# Isolation: btfs and nbdkit's plugin (libtorrent) start DHT and local
# service discovery and offer no switch to stop them, so as root the whole
# script re-runs itself inside `unshare -n` with only `lo` up: nothing can
# leave the machine.  The seeder listens on 127.0.0.2 (libtorrent folds all
# peers of one IP into one entry, so with the seeder and itself both on
# 127.0.0.1 btfs never reaches the seeder; see
# ../shared/reference/anchor-bench/TORRENT-RESULTS.md).  Without root, only
# the bt-get and diskshelf rows run.  Everything started here is stopped by
# PID at exit.
set -euo pipefail

SIZE_MB=${SIZE_MB:-256}
PIECE_LOG=${PIECE_LOG:-18}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$(realpath "${DISKSHELF_BIN:-$ROOT/build/diskshelf}")
BTGET=$(dirname "$BIN")/bt/bt-get

if [ "$(id -u)" -eq 0 ] && [ -z "${BENCH_IN_NETNS:-}" ]; then
  exec unshare -n env BENCH_IN_NETNS=1 DISKSHELF_BIN="$BIN" bash -c \
    'ip link set lo up && exec bash "$0" "$@"' "$0" "$@"
fi
COMPARE=
if [ -n "${BENCH_IN_NETNS:-}" ]; then
  if [ "$(ip -o link show | awk -F': ' '{print $2}')" != "lo" ]; then
    echo "bench: refusing to run the competing tools: interfaces other than lo exist" >&2
    exit 1
  fi
  COMPARE=1
fi

WORK=$(mktemp -d /var/tmp/bench-torrent.XXXXXX)
PIDS=()
MOUNTED=()

cleanup () {
  for m in "${MOUNTED[@]}"; do fusermount3 -u "$m" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

port () { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now () { date +%s.%N; }
since () { awk -v s="$1" -v e="$(now)" 'BEGIN{printf "%.2f", e-s}'; }
hwm_kb () { awk '/^VmHWM:/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

SEED_IP=127.0.0.1
[ -n "$COMPARE" ] && SEED_IP=127.0.0.2

mkdir -p "$WORK/data" "$WORK/tracker"
head -c $((SIZE_MB << 20)) /dev/urandom > "$WORK/data/big.bin"
want=$(sha256sum < "$WORK/data/big.bin" | cut -d' ' -f1)
TP=$(port)
mktorrent -l "$PIECE_LOG" -a "http://127.0.0.1:$TP/announce" -o "$WORK/big.torrent" \
  "$WORK/data/big.bin" >/dev/null
hash=$(aria2c -S "$WORK/big.torrent" | awk '/^Info Hash:/{print $3}')
echo "$hash" > "$WORK/tracker/whitelist.txt"
chmod 755 "$WORK" "$WORK/tracker"; chmod 644 "$WORK/tracker/whitelist.txt"
(cd "$WORK/tracker" && exec opentracker -i 127.0.0.1 -p "$TP" -P "$TP" -d "$WORK/tracker" \
   -u nobody -w whitelist.txt) >"$WORK/opentracker.log" 2>&1 &
PIDS+=($!)
aria2c --no-conf --enable-dht=false --enable-dht6=false --bt-enable-lpd=false \
  --enable-peer-exchange=false --disable-ipv6=true --interface="$SEED_IP" \
  --file-allocation=none --summary-interval=0 --seed-ratio=0.0 --check-integrity=true \
  --dir="$WORK/data" --listen-port="$(port)" --log="$WORK/aria2.log" --log-level=info \
  "$WORK/big.torrent" >"$WORK/aria2.out" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 150); do
  curl -s "http://127.0.0.1:$TP/scrape?info_hash=$(sed 's/../%&/g' <<<"$hash")" \
    | grep -aq 'completei1e' && break
  sleep 0.2
done

echo "torrent: $SIZE_MB MiB, pieces of $((1 << PIECE_LOG >> 10)) KiB, one aria2c seeder on $SEED_IP"
for threads in 4 16; do
  rm -f "$WORK/out.bin"
  t=$(now)
  "$BTGET" --out "$WORK/out.bin" --threads "$threads" --timeout 60 "$WORK/big.torrent" >/dev/null
  s=$(since "$t")
  got=$(sha256sum < "$WORK/out.bin" | cut -d' ' -f1)
  [ "$got" = "$want" ] || { echo "bt-get: WRONG DATA"; exit 1; }
  printf '%-44s %7s s  %6.1f MB/s\n' "bt-get, all pieces, $threads readers" "$s" \
    "$(awk -v s="$s" -v m="$SIZE_MB" 'BEGIN{print m*1.048576/s}')"
done
rm -f "$WORK/out.bin"

# ---- the mounts ------------------------------------------------------------
# start_TOOL DIR: mount fresh under DIR; sets FILE (the image), PID (the
# process whose RSS counts; for nbdkit also PID2) and DATA (what to `du`).

start_diskshelf () {
  mkdir -p "$1/cat" "$1/mnt"
  printf 'source = %s\n' "$WORK/big.torrent" > "$1/cat/big.img.conf"
  "$BIN" -f --cache-dir="$1/cache" "$1/cat" "$1/mnt" >"$1/log" 2>&1 &
  PID=$!; PID2=; PIDS+=("$PID"); MOUNTED+=("$1/mnt")
  FILE=$1/mnt/big.img; DATA=
}
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
  if [ "$1" = diskshelf ]; then
    "$BIN" status "$2/mnt" 2>/dev/null | awk '/^torrent-fetched:/{printf "%.1f", $4/1048576}'
  else
    du -sk "$DATA" | awk '{printf "%.1f", $1/1024}'
  fi
}
stop_it () {   # DIR
  fusermount3 -u "$1/mnt" 2>/dev/null || fusermount3 -u "$1/mnt/x" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
  kill "$PID" 2>/dev/null || true
  sleep 0.2
  kill -9 "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
  [ -n "${PID2:-}" ] && kill "$PID2" 2>/dev/null || true
}

off=$(( SIZE_MB >= 256 ? 200 * 256 : SIZE_MB * 256 * 3 / 4 ))   # in 4 KiB blocks
first_want=$(dd if="$WORK/data/big.bin" bs=4096 skip="$off" count=1 status=none | sha256sum)
TOOLS=(diskshelf)
[ -n "$COMPARE" ] && TOOLS+=(btfs nbdkit)
if [ -n "${ONLY:-}" ]; then read -r -a TOOLS <<<"$ONLY"; COMPARE=; fi
declare -A VISIBLE FIRST FETCHED CAT CATALL RSS
for tool in "${TOOLS[@]}"; do
  echo "bench: $tool: first 4 KiB" >&2
  d=$WORK/$tool-first
  t0=$(now)
  "start_$tool" "$d"
  if wait_file 30; then
    VISIBLE[$tool]=$(since "$t0")
    got=$(timeout 120 dd if="$FILE" bs=4096 skip="$off" count=1 status=none | sha256sum || true)
    if [ "$got" = "$first_want" ]; then FIRST[$tool]=$(since "$t0"); else FIRST[$tool]=failed; fi
    sleep 5
    FETCHED[$tool]=$(downloaded_mb "$tool" "$d")
  else
    VISIBLE[$tool]=failed; FIRST[$tool]=failed; FETCHED[$tool]=-
  fi
  stop_it "$d"

  echo "bench: $tool: sequential cat" >&2
  d=$WORK/$tool-cat
  t0=$(now)
  "start_$tool" "$d"
  if wait_file 30; then
    t=$(now)
    got=$(timeout 300 cat "$FILE" | sha256sum | cut -d' ' -f1 || true)
    if [ "$got" = "$want" ]; then
      CAT[$tool]=$(since "$t"); CATALL[$tool]=$(since "$t0")
    else
      CAT[$tool]=failed; CATALL[$tool]=failed
    fi
    RSS[$tool]=$(rss_mb)
  else
    CAT[$tool]=failed; CATALL[$tool]=failed; RSS[$tool]=-
  fi
  stop_it "$d"
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK/$tool-first" "$WORK/$tool-cat"
done

ratio () { awk -v a="$1" -v b="$2" 'BEGIN{ if (a+0 > 0 && b+0 > 0) printf "%.2f", a/b; else printf "-" }'; }
echo
printf '%-36s' "row (lower is better)"
for tool in "${TOOLS[@]}"; do printf ' %11s' "$tool"; done
[ -n "$COMPARE" ] && printf ' %10s %10s' "ds/btfs" "ds/nbdkit"
echo
row () {   # LABEL ARRAY-NAME
  local -n a=$2
  printf '%-36s' "$1"
  for tool in "${TOOLS[@]}"; do printf ' %11s' "${a[$tool]}"; done
  if [ -n "$COMPARE" ]; then
    printf ' %10s %10s' "$(ratio "${a[diskshelf]}" "${a[btfs]}")" \
      "$(ratio "${a[diskshelf]}" "${a[nbdkit]}")"
  fi
  echo
}
row "mount -> file visible (s)" VISIBLE
row "mount -> first 4 KiB at $((off / 256)) MiB (s)" FIRST
row "MiB downloaded 5 s after that read" FETCHED
row "sequential cat, file visible -> end (s)" CAT
row "sequential cat, mount -> end (s)" CATALL
row "peak RSS during the cat (MiB)" RSS
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (2 cores)"
