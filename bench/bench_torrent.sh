#!/bin/bash
# Benchmark: a torrent seeded by aria2c on 127.0.0.1 (tracker: opentracker),
# read through bt-get (the bt/ library alone) and through a diskshelf mount.
#
#   bench/bench_torrent.sh                  # 256 MiB, 256 KiB pieces
#   SIZE_MB=64 PIECE_LOG=18 bench/bench_torrent.sh
#
# Rows: bt-get fetching every piece with 4 and 16 reader threads; the
# mount: time to the file, first 4 KiB at 200 MiB (or 3/4 in), and a full
# sequential `dd bs=1M` (fresh daemon each).  Every figure is checked
# against the source's sha256.  For comparison, TORRENT-RESULTS.md measured
# btfs at ~25 s and nbdkit-torrent + nbdfuse at ~2.8 s for the 256 MiB
# sequential read on this kind of machine.  Everything started here is
# stopped by PID at exit; everything listens on 127.0.0.1 only.
set -euo pipefail

SIZE_MB=${SIZE_MB:-256}
PIECE_LOG=${PIECE_LOG:-18}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${DISKSHELF_BIN:-$ROOT/build/diskshelf}
BTGET=$(dirname "$BIN")/bt/bt-get
WORK=$(mktemp -d /var/tmp/bench-torrent.XXXXXX)
PIDS=()
MNT=""

cleanup () {
  [ -n "$MNT" ] && fusermount3 -u "$MNT" 2>/dev/null || true
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

port () { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now () { date +%s.%N; }
since () { awk -v s="$1" -v e="$(now)" 'BEGIN{printf "%.2f", e-s}'; }

mkdir -p "$WORK/data" "$WORK/tracker" "$WORK/mnt" "$WORK/catalog"
head -c $((SIZE_MB << 20)) /dev/urandom > "$WORK/data/big.bin"
want=$(sha256sum < "$WORK/data/big.bin" | cut -d' ' -f1)
TP=$(port)
mktorrent -l "$PIECE_LOG" -a "http://127.0.0.1:$TP/announce" -o "$WORK/big.torrent" \
  "$WORK/data/big.bin" >/dev/null
hash=$(aria2c -S "$WORK/big.torrent" | awk '/^Info Hash:/{print $3}')
echo "$hash" > "$WORK/tracker/whitelist.txt"
chmod 755 "$WORK/tracker"; chmod 644 "$WORK/tracker/whitelist.txt"
(cd "$WORK/tracker" && exec opentracker -i 127.0.0.1 -p "$TP" -P "$TP" -d "$WORK/tracker" \
   -u nobody -w whitelist.txt) >"$WORK/opentracker.log" 2>&1 &
PIDS+=($!)
aria2c --no-conf --enable-dht=false --enable-dht6=false --bt-enable-lpd=false \
  --enable-peer-exchange=false --disable-ipv6=true --interface=127.0.0.1 \
  --file-allocation=none --summary-interval=0 --seed-ratio=0.0 --check-integrity=true \
  --dir="$WORK/data" --listen-port="$(port)" "$WORK/big.torrent" >"$WORK/aria2.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do
  curl -s "http://127.0.0.1:$TP/scrape?info_hash=$(sed 's/../%&/g' <<<"$hash")" \
    | grep -aq 'completei1e' && break
  sleep 0.2
done

echo "torrent: $SIZE_MB MiB, pieces of $((1 << PIECE_LOG >> 10)) KiB, one aria2c seeder"
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

printf 'source = %s\n' "$WORK/big.torrent" > "$WORK/catalog/big.img.conf"
mount_daemon () {
  t0=$(now)
  "$BIN" -f "$WORK/catalog" "$WORK/mnt" >"$WORK/daemon.log" 2>&1 &
  DPID=$!
  MNT=$WORK/mnt
  for _ in $(seq 1 200); do [ -e "$WORK/mnt/big.img" ] && break; sleep 0.05; done
}
umount_daemon () {
  fusermount3 -u "$WORK/mnt"; wait "$DPID" || true; MNT=""
}

mount_daemon
printf '%-44s %7s s\n' "mount -> file visible" "$(since "$t0")"
off=$(( SIZE_MB >= 256 ? 200 * 256 : SIZE_MB * 256 * 3 / 4 ))   # in 4 KiB blocks
dd if="$WORK/mnt/big.img" bs=4096 skip="$off" count=1 status=none | cmp -s - \
  <(dd if="$WORK/data/big.bin" bs=4096 skip="$off" count=1 status=none) \
  || { echo "first read: WRONG DATA"; exit 1; }
printf '%-44s %7s s\n' "mount -> first 4 KiB at $((off / 256)) MiB" "$(since "$t0")"
umount_daemon

mount_daemon
t=$(now)
got=$(dd if="$WORK/mnt/big.img" bs=1M status=none | sha256sum | cut -d' ' -f1)
s=$(since "$t")
[ "$got" = "$want" ] || { echo "mount: WRONG DATA"; exit 1; }
printf '%-44s %7s s  %6.1f MB/s\n' "mount, sequential dd bs=1M (fresh daemon)" "$s" \
  "$(awk -v s="$s" -v m="$SIZE_MB" 'BEGIN{print m*1.048576/s}')"
umount_daemon
