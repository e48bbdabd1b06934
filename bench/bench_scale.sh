#!/bin/bash
# bench_scale.sh: a catalog of 1,000 entries (issue 13, "A thousand
# entries") mixing, over nested directories g00..g09/s0..s4:
#   400 local sparse files, 250 HTTP images (50 files on one nginx),
#   150 xz over HTTP (10 files), 100 NBD (one nbdkit, memory plugin,
#   every entry its own connection), 100 tar members (one local tar).
#
# Rows (each the median of REPS runs, default 3):
#   cold mount + ls -lR   daemon start (empty disk cache) until `ls -lR`
#                         of the whole mount has returned
#   cold all open         daemon start until status shows no entry opening
#   warm mount + ls -lR   the same with the disk cache of a previous run:
#                         every size is remembered, no request is needed
#   warm ls sizes right   the warm listing equals the cold final one
#   RSS, 1000 idle        VmRSS of the warm daemon, every entry listed,
#                         none used (an entry opens at its first file open)
#   threads, fds, sockets what that idle daemon holds
#   RSS after cold pass   VmRSS once every size was learnt (each stack
#                         opened once by the opener pool and closed, the
#                         last 64 after a 10 s linger)
#   ... all used once     after a 4 KiB read of every entry: 1,000 open
#                         stacks, idle (what an opened entry holds)
#   reload one entry      one .conf edited: the daemon's own time for the
#                         reload ("catalog reloaded ... in X ms"; the
#                         200 ms inotify quiet period is not included)
#   reopened by reload    "ready" lines that reload logged (should be 1)
# Targets: warm mount+ls < 1 s, RSS < 64 MiB, reload < 100 ms.
#
# No competitor row: httpdirfs, nbdfuse and archivemount serve one
# source per mount, so there is no same-run comparison for a catalog.
#
# Usage: bench/bench_scale.sh   (env: REPS=1 DISKSHELF_BIN=... WORK=...)
set -euo pipefail

REPS=${REPS:-3}
HERE=$(cd "$(dirname "$0")/.." && pwd)
BIN=${DISKSHELF_BIN:-$HERE/build/diskshelf}
WORK=${WORK:-/tmp/diskshelf-bench-scale}
rm -rf "$WORK/cat" "$WORK/cache" "$WORK/mnt" "$WORK/daemon.log"
mkdir -p "$WORK/data" "$WORK/ngx/www" "$WORK/ngx/tmp" "$WORK/mnt" "$WORK/cat"

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# ---- data ----
D=$WORK/data
if [ ! -f "$D/done" ]; then
  echo "making data in $D ..." >&2
  for i in $(seq 0 49); do
    head -c $(( (i % 4 + 1) * 1024 * 1024 )) /dev/urandom > "$WORK/ngx/www/web$i.img"
  done
  for i in $(seq 0 9); do
    head -c 2M /dev/urandom > "$D/x$i.img"
    xz -0 -T1 --block-size=1MiB -c "$D/x$i.img" > "$WORK/ngx/www/x$i.img.xz"
    rm "$D/x$i.img"
  done
  for i in $(seq 0 9); do head -c $(( (i + 1) * 65536 )) /dev/urandom > "$D/m$i.img"; done
  tar --format=gnu -cf "$D/members.tar" -C "$D" $(cd "$D" && ls m*.img)
  for i in $(seq 0 399); do truncate -s $(( (i + 1) * 1048576 )) "$D/local$i.img"; done
  touch "$D/done"
fi

# ---- peers: nginx and one nbdkit ----
PORT=$(free_port)
cat > "$WORK/ngx/nginx.conf" <<EOF
daemon off;
worker_processes 2;
pid $WORK/ngx/nginx.pid;
error_log $WORK/ngx/error.log warn;
events { worker_connections 1024; }
http {
  log_format b '\$request_method \$uri \$status \$body_bytes_sent "\$http_range"';
  access_log $WORK/ngx/access.log b;
  keepalive_requests 100000;
  client_body_temp_path $WORK/ngx/tmp;
  proxy_temp_path $WORK/ngx/tmp;
  fastcgi_temp_path $WORK/ngx/tmp;
  uwsgi_temp_path $WORK/ngx/tmp;
  scgi_temp_path $WORK/ngx/tmp;
  default_type application/octet-stream;
  server { listen 127.0.0.1:$PORT; root $WORK/ngx/www; }
}
EOF
: > "$WORK/ngx/access.log"
nginx -p "$WORK/ngx" -c "$WORK/ngx/nginx.conf" &
NGINX_PID=$!
NBD_PORT=$(free_port)
nbdkit -f -i 127.0.0.1 -p "$NBD_PORT" memory 16M &
NBD_PID=$!
DAEMON_PID=

cleanup() {
  if mountpoint -q "$WORK/mnt"; then fusermount3 -u "$WORK/mnt" || fusermount3 -uz "$WORK/mnt"; fi
  if [ -n "$DAEMON_PID" ]; then
    for _ in $(seq 100); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
  fi
  kill "$NGINX_PID" "$NBD_PID" 2>/dev/null || true
  wait "$NGINX_PID" "$NBD_PID" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null \
    && (exec 3<>/dev/tcp/127.0.0.1/"$NBD_PORT") 2>/dev/null && break
  sleep 0.1
done

# ---- the catalog ----
C=$WORK/cat
entry() {  # NAME TEXT
  mkdir -p "$(dirname "$C/$1")"
  printf '%b' "$2" > "$C/$1.conf"
}
n=0
place() { echo "g$(printf %02d $((n % 10)))/s$((n / 10 % 5))"; }
for i in $(seq 0 399); do entry "$(place)/local$i.img" "source = $D/local$i.img\n"; n=$((n + 1)); done
for i in $(seq 0 249); do
  entry "$(place)/web$i.img" "source = http://127.0.0.1:$PORT/web$((i % 50)).img\n"; n=$((n + 1))
done
for i in $(seq 0 149); do
  entry "$(place)/xz$i.img" "source = http://127.0.0.1:$PORT/x$((i % 10)).img.xz\n"; n=$((n + 1))
done
for i in $(seq 0 99); do
  entry "$(place)/nbd$i.img" "source = nbd://127.0.0.1:$NBD_PORT/\nreadonly = yes\n"; n=$((n + 1))
done
for i in $(seq 0 99); do
  entry "$(place)/tar$i.img" "source = $D/members.tar\nentry = m$((i % 10)).img\n"; n=$((n + 1))
done
echo "catalog: $(find "$C" -name '*.conf' | wc -l) entries" >&2

# ---- runs ----
STATUS=$WORK/mnt/.diskshelf-status
start() {  # start the daemon (it returns once mounted); set DAEMON_PID
  "$BIN" --cache-dir="$WORK/cache" --log-file="$WORK/daemon.log" "$C" "$WORK/mnt"
  DAEMON_PID=$(awk '/^pid:/ {print $2; exit}' "$STATUS")
}
stop() {
  fusermount3 -u "$WORK/mnt"
  for _ in $(seq 300); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
  DAEMON_PID=
}
wait_open() {
  for _ in $(seq 1200); do
    grep -q '^opening: 0$' "$STATUS" && return 0
    sleep 0.05
  done
  echo "entries still opening after 60 s" >&2; return 1
}

cold_ls=(); cold_open=(); warm_ls=(); rss=(); threads=(); fds=(); socks=()
rss_cold=(); rss_used=(); threads_used=(); socks_used=() reload=(); reopened=(); same=yes
for r in $(seq "$REPS"); do
  rm -rf "$WORK/cache"
  t0=$(now); start; ls -lR "$WORK/mnt" > /dev/null; t1=$(now)
  wait_open; t2=$(now)
  cold_ls+=("$(echo "$t1 - $t0" | bc)"); cold_open+=("$(echo "$t2 - $t0" | bc)")
  ls -lR "$WORK/mnt" > "$WORK/cold.ls"
  sleep 11     # past OPENER_SPARE_LINGER_S: the learning opens' stacks are closed
  rss_cold+=("$(awk '/^VmRSS:/ {printf "%.1f", $2 / 1024}' "/proc/$DAEMON_PID/status")")
  # Every entry used once (4 KiB read), then idle: what open stacks hold.
  python3 -c '
import os, sys
for d, _, fs in os.walk(sys.argv[1]):
    for f in fs:
        if not f.startswith("."):
            with open(os.path.join(d, f), "rb") as fp:
                fp.read(4096)' "$WORK/mnt"
  sleep 2
  rss_used+=("$(awk '/^VmRSS:/ {printf "%.1f", $2 / 1024}' "/proc/$DAEMON_PID/status")")
  threads_used+=("$(awk '/^Threads:/ {print $2}' "/proc/$DAEMON_PID/status")")
  socks_used+=("$(find "/proc/$DAEMON_PID/fd" -lname 'socket:*' | wc -l)")
  stop

  : > "$WORK/ngx/access.log.mark"
  before=$(wc -l < "$WORK/ngx/access.log")
  t0=$(now); start; ls -lR "$WORK/mnt" > "$WORK/warm.ls"; t1=$(now)
  warm_ls+=("$(echo "$t1 - $t0" | bc)")
  # Files only: directories carry the daemon's start time.
  cmp -s <(grep -v '^d' "$WORK/cold.ls") <(grep -v '^d' "$WORK/warm.ls") || same=no
  wait_open
  sleep 1
  rss+=("$(awk '/^VmRSS:/ {printf "%.1f", $2 / 1024}' "/proc/$DAEMON_PID/status")")
  threads+=("$(awk '/^Threads:/ {print $2}' "/proc/$DAEMON_PID/status")")
  fds+=("$(ls "/proc/$DAEMON_PID/fd" | wc -l)")
  socks+=("$(find "/proc/$DAEMON_PID/fd" -lname 'socket:*' | wc -l)")

  # One entry changes: only it is reopened.
  reloads=$(grep -c 'catalog reloaded' "$WORK/daemon.log" || true)
  readies=$(grep -c ': ready (' "$WORK/daemon.log" || true)
  entry "g03/s1/local13.img" "source = $D/local13.img\n# edited $r\n"
  for _ in $(seq 200); do
    [ "$(grep -c 'catalog reloaded' "$WORK/daemon.log")" -gt "$reloads" ] && break
    sleep 0.05
  done
  reload+=("$(grep 'catalog reloaded' "$WORK/daemon.log" | tail -1 | sed 's/.* in \([0-9.]*\) ms.*/\1/')")
  reopened+=("$(( $(grep -c ': ready (' "$WORK/daemon.log") - readies ))")
  entry "g03/s1/local13.img" "source = $D/local13.img\n"
  sleep 0.5
  stop
done

# ---- report ----
row() { printf '%-26s %12s %s\n' "$1" "$2" "$3"; }
echo
row "entries" "$(find "$C" -name '*.conf' | wc -l)" ""
row "cold mount + ls -lR" "$(printf '%s\n' "${cold_ls[@]}" | median)" "s"
row "cold all open" "$(printf '%s\n' "${cold_open[@]}" | median)" "s"
row "warm mount + ls -lR" "$(printf '%s\n' "${warm_ls[@]}" | median)" "s   (target < 1 s)"
row "warm ls sizes right" "$same" ""
row "RSS, 1000 idle (warm)" "$(printf '%s\n' "${rss[@]}" | median)" "MiB (target < 64 MiB)"
row "threads, idle (warm)" "$(printf '%s\n' "${threads[@]}" | median)" ""
row "fds (sockets), idle" "$(printf '%s\n' "${fds[@]}" | median) ($(printf '%s\n' "${socks[@]}" | median))" ""
row "RSS after cold pass" "$(printf '%s\n' "${rss_cold[@]}" | median)" "MiB"
row "RSS, all used once" "$(printf '%s\n' "${rss_used[@]}" | median)" "MiB (1000 stacks open, idle)"
row "threads, all used once" "$(printf '%s\n' "${threads_used[@]}" | median)" ""
row "sockets, all used once" "$(printf '%s\n' "${socks_used[@]}" | median)" ""
row "reload one entry" "$(printf '%s\n' "${reload[@]}" | median)" "ms  (target < 100 ms)"
row "reopened by reload" "$(printf '%s\n' "${reopened[@]}" | median)" "entries"
