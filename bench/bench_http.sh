#!/bin/bash
# Benchmark: an image served by nginx on 127.0.0.1, read through diskshelf
# (HTTP layer + disk cache) and through nbdfuse + nbdkit curl, in one run.
#
#   bench/bench_http.sh                 # 2 GiB image
#   SIZE=512M RUNTIME=10 bench/bench_http.sh
#
# Rows: cold sequential read (fresh cache), warm sequential read (a new
# daemon reading from the disk cache; and the same mount again, from the
# kernel page cache that immutable entries keep), and 4 KiB random reads
# (fio psync, O_DIRECT, 1 job) on a fresh cache.  Sequential reads are
# `dd bs=1M` to /dev/null.  The local baselines are the same file read
# from the page cache (dd) and from the disk (dd iflag=direct).
# Every process started here is stopped by PID at exit.
set -euo pipefail

SIZE=${SIZE:-2G}
RUNTIME=${RUNTIME:-15}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${DISKSHELF_BIN:-$ROOT/build/diskshelf}
WORK=$(mktemp -d /var/tmp/bench-http.XXXXXX)
PIDS=()
MOUNTS=()

cleanup () {
  set +e
  for m in "${MOUNTS[@]}"; do
    mountpoint -q "$m" && fusermount3 -u "$m" 2>/dev/null
  done
  for p in "${PIDS[@]}"; do
    kill "$p" 2>/dev/null && wait "$p" 2>/dev/null
  done
  for m in "${MOUNTS[@]}"; do
    mountpoint -q "$m" && fusermount3 -uz "$m" 2>/dev/null
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port () {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_until () { # seconds, command...
  local t=$1; shift
  for _ in $(seq $((t * 20))); do "$@" && return 0; sleep 0.05; done
  echo "timed out waiting for: $*" >&2; return 1
}

# Seconds taken by a command, to stdout.
timed () {
  local s e
  s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N)
  echo "$e - $s" | bc -l
}

mbps () { echo "scale=1; $BYTES / $1 / 1000000" | bc -l; }

echo "preparing a $SIZE image in $WORK ..." >&2
mkdir -p "$WORK/www" "$WORK/ngx/tmp" "$WORK/cat"
head -c "$SIZE" /dev/urandom > "$WORK/www/img.raw"
BYTES=$(stat -c %s "$WORK/www/img.raw")

PORT=$(free_port)
cat > "$WORK/ngx/nginx.conf" <<NGX
daemon off;
user root;
worker_processes 2;
pid $WORK/ngx/nginx.pid;
error_log $WORK/ngx/error.log warn;
events { worker_connections 256; }
http {
  log_format ds '\$request_method \$status \$body_bytes_sent "\$http_range"';
  access_log $WORK/ngx/access.log ds;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  keepalive_timeout 120s;
  client_body_temp_path $WORK/ngx/tmp;
  proxy_temp_path $WORK/ngx/tmp;
  fastcgi_temp_path $WORK/ngx/tmp;
  uwsgi_temp_path $WORK/ngx/tmp;
  scgi_temp_path $WORK/ngx/tmp;
  types { application/octet-stream raw img; }
  server { listen 127.0.0.1:$PORT; root $WORK/www; }
}
NGX
nginx -p "$WORK/ngx" -c "$WORK/ngx/nginx.conf" &
PIDS+=($!)
wait_until 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$PORT" 2>/dev/null
URL=http://127.0.0.1:$PORT/img.raw
echo "source = $URL" > "$WORK/cat/x.img.conf"

ds_mount () { # mountpoint cache-dir
  mkdir -p "$1"
  "$BIN" -f --cache-dir="$2" --cache-size=8G "$WORK/cat" "$1" 2>>"$WORK/ds.log" &
  PIDS+=($!)
  MOUNTS+=("$1")
  wait_until 30 mountpoint -q "$1"
}

ds_unmount () {
  fusermount3 -u "$1"
  wait_until 30 bash -c "! mountpoint -q $1"
  sleep 0.5
}

nbd_mount () { # mountpoint
  mkdir -p "$1"
  nbdfuse -r "$1/x" --command nbdkit -s curl "$URL" &
  PIDS+=($!)
  MOUNTS+=("$1")
  wait_until 30 test -e "$1/x"
}

fio_iops () { # file
  fio --name=rr --filename="$1" --readonly --rw=randread --bs=4k --ioengine=psync \
      --direct=1 --numjobs=1 --runtime="$RUNTIME" --time_based --group_reporting \
      --output-format=json 2>/dev/null \
    | /usr/bin/python3 -c 'import json,sys; print(round(json.load(sys.stdin)["jobs"][0]["read"]["iops"]))'
}

# Local baselines: page cache (the file was just written) and disk.
t=$(timed dd if="$WORK/www/img.raw" of=/dev/null bs=1M); local_cache=$(mbps "$t")
t=$(timed dd if="$WORK/www/img.raw" of=/dev/null bs=1M iflag=direct); local_disk=$(mbps "$t")

# diskshelf: cold (fresh cache), warm from the disk cache (new daemon),
# warm from the kernel page cache (same mount, second read).
ds_mount "$WORK/m1" "$WORK/cache1"
t=$(timed dd if="$WORK/m1/x.img" of=/dev/null bs=1M); ds_cold=$(mbps "$t")
cmp -s "$WORK/m1/x.img" "$WORK/www/img.raw" && ds_ok=ok || ds_ok=MISMATCH
t=$(timed dd if="$WORK/m1/x.img" of=/dev/null bs=1M); ds_kernel=$(mbps "$t")
ds_unmount "$WORK/m1"
gets_before=$(grep -c '^GET' "$WORK/ngx/access.log" || true)
ds_mount "$WORK/m2" "$WORK/cache1"
t=$(timed dd if="$WORK/m2/x.img" of=/dev/null bs=1M); ds_warm=$(mbps "$t")
gets_after=$(grep -c '^GET' "$WORK/ngx/access.log" || true)
ds_unmount "$WORK/m2"
ds_mount "$WORK/m3" "$WORK/cache2"
ds_iops=$(fio_iops "$WORK/m3/x.img")
ds_unmount "$WORK/m3"

# nbdfuse + nbdkit curl: no cache, so the second read is its warm row.
nbd_mount "$WORK/n1"
t=$(timed dd if="$WORK/n1/x" of=/dev/null bs=1M); nbd_cold=$(mbps "$t")
t=$(timed dd if="$WORK/n1/x" of=/dev/null bs=1M); nbd_warm=$(mbps "$t")
nbd_iops=$(fio_iops "$WORK/n1/x")

ratio () { echo "scale=2; $1 / $2" | bc -l; }
printf '\nHTTP image of %s bytes from nginx on 127.0.0.1 (check: %s; GETs during warm run: %s)\n' \
  "$BYTES" "$ds_ok" "$((gets_after - gets_before))"
printf '%-44s %12s %12s %8s\n' "row" "diskshelf" "nbdfuse" "ratio"
printf '%-44s %12s %12s %8s\n' "cold sequential, MB/s" "$ds_cold" "$nbd_cold" "$(ratio "$ds_cold" "$nbd_cold")"
printf '%-44s %12s %12s %8s\n' "warm sequential (disk cache, new daemon), MB/s" "$ds_warm" "$nbd_warm" "$(ratio "$ds_warm" "$nbd_warm")"
printf '%-44s %12s %12s %8s\n' "warm sequential (same mount), MB/s" "$ds_kernel" "$nbd_warm" "$(ratio "$ds_kernel" "$nbd_warm")"
printf '%-44s %12s %12s %8s\n' "4 KiB random reads, IOPS (cold cache)" "$ds_iops" "$nbd_iops" "$(ratio "$ds_iops" "$nbd_iops")"
printf '\n%-44s %12s\n' "local file, page cache, MB/s" "$local_cache"
printf '%-44s %12s\n' "local file, disk (O_DIRECT), MB/s" "$local_disk"
printf '%-44s %12s\n' "warm (disk cache) / local page cache" "$(ratio "$ds_warm" "$local_cache")"
printf '%-44s %12s\n' "warm (disk cache) / local disk" "$(ratio "$ds_warm" "$local_disk")"
printf '%-44s %12s\n' "warm (same mount) / local page cache" "$(ratio "$ds_kernel" "$local_cache")"
