# bench/lib.sh: pieces every benchmark needs, sourced by bench/bench_*.sh.
#   bench_free_port              print a free TCP port on 127.0.0.1
#   bench_nginx_start DIR ROOT   start nginx on 127.0.0.1 serving ROOT, its
#                                files under DIR; sets NGINX_PID, NGINX_PORT.
#                                Its access log, DIR/access.log, has one line
#                                per request: method uri status bytes "range"
#                                (so bytes sent = sum of field 4).
#   bench_nginx_stop             stop it (safe to call twice)
#   bench_cache_data DIR SIZE    print "PATH OFFSET" of the disk-cache data
#                                file under DIR holding an object of SIZE
#                                bytes (the file is a header and a bitmap,
#                                then the object at OFFSET, so its length
#                                is OFFSET + SIZE); nothing when none
#   bench_dd_cache_data DIR SIZE MB/s of dd bs=1M of that object's bytes
#                                straight from the file (0 when none),
#                                run under $BENCH_NICE (a command prefix)
#   bench_ceiling_mbs BIN SIZE [RA_KB [MODE]]
#                                MB/s of dd bs=1M of the FUSE ceiling: a
#                                file of SIZE bytes served from memory by
#                                bench/fuse_ceiling (BIN; MODE copy, nocopy
#                                or splice, default copy) on a fresh mount
#                                with a read-ahead of RA_KB KiB (default
#                                1024, the daemon's --readahead); 0 when it
#                                cannot run.  Under $BENCH_NICE.

bench_free_port () {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

bench_nginx_start () {   # DIR ROOT
  local dir=$1 root=$2
  mkdir -p "$dir/tmp"
  NGINX_PORT=$(bench_free_port)
  cat > "$dir/nginx.conf" <<NGX
daemon off;
worker_processes 2;
user root;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 256; }
http {
  log_format b '\$request_method \$uri \$status \$body_bytes_sent "\$http_range"';
  access_log $dir/access.log b;
  sendfile on;
  keepalive_requests 100000;
  client_body_temp_path $dir/tmp;
  proxy_temp_path $dir/tmp;
  fastcgi_temp_path $dir/tmp;
  uwsgi_temp_path $dir/tmp;
  scgi_temp_path $dir/tmp;
  default_type application/octet-stream;
  server { listen 127.0.0.1:$NGINX_PORT; root $root; }
}
NGX
  nginx -p "$dir" -c "$dir/nginx.conf" &
  NGINX_PID=$!
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$NGINX_PORT") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "bench: nginx did not start (see $dir/error.log)" >&2
  return 1
}

bench_nginx_stop () {
  if [ -n "${NGINX_PID:-}" ]; then
    kill "$NGINX_PID" 2>/dev/null || true
    wait "$NGINX_PID" 2>/dev/null || true
  fi
  NGINX_PID=
}

bench_cache_data () {   # DIR SIZE
  /usr/bin/python3 - "$1" "$2" <<'PY'
import os, struct, sys
top, size = sys.argv[1], int(sys.argv[2])
for d, _, files in os.walk(top):
    for f in files:
        p = os.path.join(d, f)
        try:
            n = os.path.getsize(p)
            with open(p, "rb") as fh:
                head = fh.read(48)
        except OSError:
            continue
        # data_off is the little-endian u64 at byte 40 of the header.
        if len(head) == 48 and struct.unpack_from("<Q", head, 40)[0] == n - size:
            print(p, n - size)
            sys.exit(0)
PY
}

bench_dd_cache_data () {   # DIR SIZE
  local found t0 t1
  found=$(bench_cache_data "$1" "$2")
  if [ -z "$found" ]; then echo 0; return; fi
  set -- "${found% *}" "${found##* }" "$2"
  t0=$(date +%s.%N)
  ${BENCH_NICE:-} dd if="$1" of=/dev/null bs=1M iflag=skip_bytes skip="$2" status=none
  t1=$(date +%s.%N)
  echo "$t0 $t1 $3" | awk '{printf "%.1f", $3 / ($2 - $1) / 1e6}'
}

bench_ceiling_mbs () {   # BIN SIZE [RA_KB [MODE]]
  local bin=$1 size=$2 ra=${3:-1024} mode=${4:-copy} mnt pid dev t0 t1 ok=0
  [ -x "$bin" ] || { echo 0; return; }
  mnt=$(mktemp -d /tmp/bench-ceiling.XXXXXX)
  ${BENCH_NICE:-} "$bin" "$mode" "$size" "$mnt" 2>/dev/null &
  pid=$!
  for _ in $(seq 200); do
    [ -e "$mnt/img" ] && { ok=1; break; }
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  if [ "$ok" = 1 ]; then
    dev=$(mountpoint -d "$mnt" 2>/dev/null || true)
    [ -n "$dev" ] && echo "$ra" > "/sys/class/bdi/$dev/read_ahead_kb" 2>/dev/null || true
    t0=$(date +%s.%N)
    ${BENCH_NICE:-} dd if="$mnt/img" of=/dev/null bs=1M status=none || ok=0
    t1=$(date +%s.%N)
  fi
  fusermount3 -u "$mnt" 2>/dev/null || true
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rmdir "$mnt" 2>/dev/null || true
  if [ "$ok" = 1 ]; then
    echo "$t0 $t1 $size" | awk '{printf "%.1f", $3 / ($2 - $1) / 1e6}'
  else
    echo 0
  fi
}
