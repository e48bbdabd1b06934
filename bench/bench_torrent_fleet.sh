#!/bin/bash
# Benchmark: a fleet of diskshelf daemons sharing one torrent (issue 11,
# the fleet row).  FLEET_N daemons on loopback (each its own --cache-dir,
# --torrent-listen port and mount) read the same image at once, with
# `cat | bench_sha256` (checked), from a single aria2c seeder found through
# opentracker; the daemons find each other through the tracker too.
#
#   bench/bench_torrent_fleet.sh                   # 8 daemons, 1 GiB, 256 KiB pieces
#   FLEET_N=4 FLEET_MB=128 bench/bench_torrent_fleet.sh
#   PIECE_LOG=20 bench/bench_torrent_fleet.sh      # 1 MiB pieces
#
# Figures, all from the same run and swarm:
#   - one daemon alone (fresh cache): time from the start of the cat to
#     its end, and what the seeder uploaded for it;
#   - FLEET_N fresh daemons at once: time from the start of the cats until
#     the last one ends (and the first), the seeder's upload as a multiple
#     of the image (from aria2c's own counter, RPC uploadLength), and what
#     the daemons uploaded to each other (their status);
#   - the two target ratios: seeder upload / image <= 2, last daemon /
#     one daemon <= 2.
# The one-daemon run is stopped before the fleet starts, so it serves no
# one.  Every daemon is mounted and has announced before the cats start.
#
# Isolation as bench_torrent.sh: as root the script re-runs itself under
# `unshare -n` with only lo up and the seeder on 127.0.0.2; without root
# it runs on 127.0.0.1 of the host's namespace.  Everything started here
# is unmounted and stopped by PID at exit.
set -euo pipefail

FLEET_N=${FLEET_N:-8}
FLEET_MB=${FLEET_MB:-1024}
PIECE_LOG=${PIECE_LOG:-18}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$(realpath "${DISKSHELF_BIN:-$ROOT/build/diskshelf}")
. "$ROOT/bench/lib.sh"

DISKSHELF_BIN=$BIN bench_netns_enter "$0" "$@"
SEED_IP=127.0.0.1
if [ -n "${BENCH_IN_NETNS:-}" ]; then
  if ! bench_netns_only_lo; then
    echo "bench: interfaces other than lo exist in the namespace" >&2
    exit 1
  fi
  SEED_IP=127.0.0.2
fi

WORK=$(mktemp -d /var/tmp/bench-fleet.XXXXXX)
PIDS=()
MOUNTED=()
cleanup () {
  for m in "${MOUNTED[@]}"; do
    fusermount3 -u "$m" 2>/dev/null || fusermount3 -u -z "$m" 2>/dev/null || true
  done
  for p in "${READERS[@]}" "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${READERS[@]}" "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"
}
READERS=()
trap cleanup EXIT
trap 'exit 130' INT TERM

SIZE=$((FLEET_MB << 20))
mkdir -p "$WORK/data"
head -c "$SIZE" /dev/urandom > "$WORK/data/fleet.img"
want=$(bench_sha256 < "$WORK/data/fleet.img")
bench_torrent_swarm "$WORK" "$WORK/data/fleet.img" "$PIECE_LOG" "$SEED_IP"
PIDS+=("$TRACKER_PID" "$SEEDER_PID")
CAT_TIMEOUT=$((60 + FLEET_MB))   # seconds; generous: a failure, not a figure

# start_daemon DIR: a fresh daemon with its own cache and listening port.
start_daemon () {
  local d=$1
  mkdir -p "$d/cat" "$d/mnt"
  printf 'source = %s\n' "$TORRENT" > "$d/cat/fleet.img.conf"
  "$BIN" -f --cache-dir="$d/cache" --torrent-listen="127.0.0.1:$(bench_free_port)" \
    "$d/cat" "$d/mnt" >"$d/log" 2>&1 &
  echo $! > "$d/pid"
  PIDS+=($!); MOUNTED+=("$d/mnt")
}
# wait_ready DIR: the image is visible and the daemon has announced.
wait_ready () {
  local d=$1 _
  for _ in $(seq 1 600); do
    if [ -e "$d/mnt/fleet.img" ] \
       && "$BIN" status "$d/mnt" 2>/dev/null | grep -q '^torrent-announces: [1-9]'; then
      return 0
    fi
    kill -0 "$(cat "$d/pid")" 2>/dev/null || break
    sleep 0.05
  done
  echo "bench: daemon in $d did not come up (see $d/log)" >&2
  return 1
}
# read_all DIR: cat | bench_sha256; DIR/sum and DIR/end (a timestamp).
read_all () {
  local d=$1
  (timeout "$CAT_TIMEOUT" cat "$d/mnt/fleet.img" | bench_sha256 > "$d/sum"
   bench_now > "$d/end") &
  READERS+=($!)
}
wait_readers () { for p in "${READERS[@]}"; do wait "$p" || true; done; READERS=(); }
fetched_by_daemon () {   # DIR: "PIECES BYTES" taken from peers (twice counts twice)
  "$BIN" status "$1/mnt" 2>/dev/null | awk '/^torrent-fetched:/{print $2, $4, $9}'
}
uploaded_by_daemon () {   # DIR
  "$BIN" status "$1/mnt" 2>/dev/null \
    | awk '/^torrent-seeding: port/{for (i = 1; i < NF; i++) if ($(i+1) == "bytes") print $i}'
}
cpu_s () {   # PID: user + system CPU seconds so far
  awk -v t="$(bench_cpu_ticks "/proc/$1/stat")" -v hz="$(getconf CLK_TCK)" \
    'BEGIN{printf "%.1f", (t + 0) / hz}'
}
stop_daemon () {   # DIR
  local d=$1 pid _
  pid=$(cat "$d/pid")
  fusermount3 -u "$d/mnt" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
check_sum () {   # DIR
  if [ "$(cat "$1/sum" 2>/dev/null)" != "$want" ]; then
    echo "bench: WRONG DATA or timeout in $1 (see $1/log)" >&2
    exit 1
  fi
}
ratio () { awk -v a="$1" -v b="$2" 'BEGIN{ if (b+0 > 0) printf "%.2f", a/b; else printf "-" }'; }

echo "fleet: $FLEET_N daemons, $FLEET_MB MiB image, pieces of $((1 << PIECE_LOG >> 10)) KiB," \
  "one aria2c seeder on $SEED_IP, tracker opentracker"

# ---- one daemon alone ------------------------------------------------------
echo "bench: one daemon alone" >&2
up0=$(bench_seeder_uploaded)
d=$WORK/solo
start_daemon "$d"
wait_ready "$d"
t0=$(bench_now)
read_all "$d"
wait_readers
check_sum "$d"
solo=$(awk -v s="$t0" -v e="$(cat "$d/end")" 'BEGIN{printf "%.2f", e-s}')
solo_cpu=$(cpu_s "$(cat "$d/pid")")
stop_daemon "$d"
up1=$(bench_seeder_uploaded)
printf '%-34s %8s s  %6.1f MB/s   seeder uploaded %sx the image\n' "one daemon alone:" "$solo" \
  "$(awk -v s="$solo" -v b="$SIZE" 'BEGIN{print b/s/1e6}')" "$(ratio $((up1 - up0)) "$SIZE")"

# ---- the fleet -------------------------------------------------------------
echo "bench: $FLEET_N daemons at once" >&2
for i in $(seq 1 "$FLEET_N"); do start_daemon "$WORK/d$i"; done
for i in $(seq 1 "$FLEET_N"); do wait_ready "$WORK/d$i"; done
t0=$(bench_now)
for i in $(seq 1 "$FLEET_N"); do read_all "$WORK/d$i"; done
wait_readers
first=; last=; peer_up=0; fetched=0; taken=0; discarded=0; fleet_cpu=0
for i in $(seq 1 "$FLEET_N"); do
  d=$WORK/d$i
  check_sum "$d"
  s=$(awk -v s="$t0" -v e="$(cat "$d/end")" 'BEGIN{printf "%.2f", e-s}')
  [ -z "$first" ] || awk -v a="$s" -v b="$first" 'BEGIN{exit !(a < b)}' && first=$s
  [ -z "$last" ] || awk -v a="$s" -v b="$last" 'BEGIN{exit !(a > b)}' && last=$s
  peer_up=$((peer_up + $(uploaded_by_daemon "$d")))
  read -r p b x <<<"$(fetched_by_daemon "$d")"
  fetched=$((fetched + p)); taken=$((taken + b)); discarded=$((discarded + x))
  fleet_cpu=$(awk -v a="$fleet_cpu" -v b="$(cpu_s "$(cat "$d/pid")")" 'BEGIN{print a + b}')
done
up2=$(bench_seeder_uploaded)
for i in $(seq 1 "$FLEET_N"); do stop_daemon "$WORK/d$i"; done
printf '%-34s %8s s  (first %s s)   seeder uploaded %sx the image, daemons %sx to each other\n' \
  "$FLEET_N daemons at once, last done:" "$last" "$first" "$(ratio $((up2 - up1)) "$SIZE")" \
  "$(ratio "$peer_up" "$SIZE")"
pieces=$(( (SIZE + (1 << PIECE_LOG) - 1) >> PIECE_LOG ))
printf '%-34s %8s of %s (%s%% fetched more than once)\n' "pieces fetched by the daemons:" \
  "$fetched" "$((pieces * FLEET_N))" \
  "$(awk -v f="$fetched" -v n="$((pieces * FLEET_N))" 'BEGIN{printf "%.1f", (f - n) * 100 / n}')"
printf '%-34s %8s of the bytes sent (seeder and daemons) were used, %s discarded\n' \
  "blocks used by the daemons:" \
  "$(awk -v t="$taken" -v s="$((up2 - up1 + peer_up))" 'BEGIN{printf "%.1f%%", t * 100 / s}')" \
  "$(awk -v t="$discarded" -v s="$((up2 - up1 + peer_up))" 'BEGIN{printf "%.1f%%", t * 100 / s}')"
printf '%-34s %8s s for one alone, %s s for the %s (%s cores: at least %s s of CPU time per core)\n' \
  "CPU time of the daemons:" "$solo_cpu" "$fleet_cpu" "$FLEET_N" "$(nproc)" \
  "$(awk -v c="$fleet_cpu" -v n="$(nproc)" 'BEGIN{printf "%.1f", c / n}')"
echo
printf '%-44s %6s  (target <= 2)\n' "seeder upload / image, fleet" "$(ratio $((up2 - up1)) "$SIZE")"
printf '%-44s %6s  (target <= 2)\n' "last daemon / one daemon alone" "$(ratio "$last" "$solo")"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores)"
