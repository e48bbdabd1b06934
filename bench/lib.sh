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
#                                bytes (NAME.dsd, the object's bytes at
#                                their own offsets, so OFFSET is 0 and its
#                                length is SIZE); nothing when none
#   bench_dd_cache_data DIR SIZE MB/s of dd bs=1M of that object's bytes
#                                straight from the file (0 when none),
#                                run under $BENCH_NICE (a command prefix)
#   bench_dd_mbs FILE BYTES [SKIP]
#                                MB/s of dd bs=1M of FILE from byte SKIP
#                                to its end, BYTES long (0 when dd fails),
#                                run under $BENCH_NICE
#   bench_max N...               the largest of the numbers (sort -g:
#                                a word such as "failed" loses to any)
#   bench_now                    monotonic-enough wall clock, seconds
#   bench_since T0               seconds since T0 (two decimals)
#   bench_netns_enter SCRIPT ARG...
#                                as root and not yet inside: re-exec
#                                `bash SCRIPT ARG...` under `unshare -n`
#                                with only lo up (BENCH_IN_NETNS=1); else
#                                return.  Pass DISKSHELF_BIN absolute.
#   bench_netns_only_lo          true inside that namespace when lo is the
#                                only interface (nothing can leave)
#   bench_torrent_swarm DIR FILE PIECE_LOG SEED_IP
#                                a swarm of one: mktorrent FILE into
#                                DIR/swarm.torrent (tracker on 127.0.0.1),
#                                opentracker (whitelisting it) and an
#                                aria2c seeder on SEED_IP with its JSON-RPC
#                                on; returns once the tracker counts the
#                                seeder.  Sets TORRENT, INFO_HASH,
#                                TRACKER_PID, SEEDER_PID, SEEDER_RPC_PORT
#                                (the caller stops the PIDs)
#   bench_seeder_uploaded        bytes the aria2c seeder has uploaded so
#                                far, from its own counter (RPC
#                                aria2.tellActive uploadLength)
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
import os, sys
top, size = sys.argv[1], int(sys.argv[2])
for d, _, files in os.walk(top):
    for f in files:
        p = os.path.join(d, f)
        # The data file, beside its metadata file NAME.dsc.
        if f.endswith(".dsd") and os.path.exists(p[:-1] + "c") \
                and os.path.getsize(p) == size:
            print(p, 0)
            sys.exit(0)
PY
}

bench_dd_cache_data () {   # DIR SIZE
  local found
  found=$(bench_cache_data "$1" "$2")
  if [ -z "$found" ]; then echo 0; return; fi
  bench_dd_mbs "${found% *}" "$2" "${found##* }"
}

bench_dd_mbs () {   # FILE BYTES [SKIP]
  local t0 t1
  t0=$(date +%s.%N)
  ${BENCH_NICE:-} dd if="$1" of=/dev/null bs=1M iflag=skip_bytes skip="${3:-0}" \
    status=none || { echo 0; return; }
  t1=$(date +%s.%N)
  echo "$t0 $t1 $2" | awk '{printf "%.1f", $3 / ($2 - $1) / 1e6}'
}

# bench_sha256: the SHA-256 of stdin, in hex.  A timed `cat | sha256sum`
# measured the checker: coreutils' sha256sum hashes about 0.33 GB/s
# here, below what the tools read at, and on 2 cores eight of them at
# once took more CPU than the daemons they checked.  Python's hashlib
# (OpenSSL, with the CPU's SHA instructions) hashes about 1.6 GB/s.
# It widens its input pipe to 1 MiB (the unprivileged maximum): with the
# default 64 KiB, `perf sched` showed a timed torrent cat spending 1.6 s
# of its 4 s blocked writing the pipe, cat and the checker waking each
# other every 64 KiB on 2 busy cores.
bench_sha256 () {
  /usr/bin/python3 -c '
import fcntl, hashlib, sys
try:
    fcntl.fcntl(0, fcntl.F_SETPIPE_SZ, 1 << 20)
except OSError:
    pass
h = hashlib.sha256()
for chunk in iter(lambda: sys.stdin.buffer.read(1 << 20), b""):
    h.update(chunk)
print(h.hexdigest())'
}
bench_now () { date +%s.%N; }
bench_max () { printf '%s\n' "$@" | sort -g | tail -1; }
# Before a measurement: with WARM-MIB, write and delete that much, so the
# page cache pages the tool's writes will get have been touched once (in
# this VM a daemon storing 1 GiB into fresh pages used up to 2.5x the CPU);
# then write every dirty page out, or the 1 GiB written just before (the
# data, the last tool's cache) is flushed 30 s later
# (vm.dirty_expire_centisecs), in the middle of the next measurement.
# Neither removes all of the first-run penalty (up to 1.4x the time of the
# same binary run second): benches still alternate the tools' order.
bench_settle () {   # [WARM-MIB]
  if [ -n "${1:-}" ]; then
    local warm; warm=$(mktemp /var/tmp/bench-warm.XXXXXX)
    head -c $(($1 << 20)) /dev/zero > "$warm"
    rm -f "$warm"
  fi
  sync
}
# User + system CPU clock ticks in a /proc stat file (a process's or a
# thread's), read after the name, which may hold spaces; nothing (and
# success, for set -e) when the file is gone.
bench_cpu_ticks () {   # STAT-FILE
  awk '{sub(/^.*\) /, ""); print $12 + $13}' "$1" 2>/dev/null || true
}
# CPU seconds (user + system) of PID, by thread name (diskshelf names
# its helpers: ds-fetch, ds-bt-peer, ...), largest first, as
# "name=seconds(threads) ...", after "all=" for the whole process; threads
# that already ended count as "(ended)" (the process's total less the
# live threads').
bench_thread_cpu () {   # PID
  local t
  {
    printf '(all)\t%s\n' "$(bench_cpu_ticks "/proc/$1/stat")"
    for t in /proc/"$1"/task/*; do
      printf '%s\t%s\n' "$(cat "$t/comm" 2>/dev/null)" "$(bench_cpu_ticks "$t/stat")"
    done
  } | awk -F'\t' -v hz="$(getconf CLK_TCK)" '
    $1 == "(all)" { all = $2; next }
    $2 != "" { s[$1] += $2; n[$1]++; live += $2 }
    END {
      printf "%d all=%.2fs\n", 1e12, all / hz
      s["(ended)"] = all - live
      for (k in s) printf "%d %s=%.2fs(%s)\n", s[k], k, s[k]/hz, k == "(ended)" ? "-" : n[k]
    }' | sort -rn | awk '{out = out (NR > 1 ? " " : "") $2} END {print out}'
}
bench_since () { awk -v s="$1" -v e="$(bench_now)" 'BEGIN{printf "%.2f", e-s}'; }

bench_netns_enter () {   # SCRIPT ARG...
  if [ "$(id -u)" -eq 0 ] && [ -z "${BENCH_IN_NETNS:-}" ]; then
    exec unshare -n env BENCH_IN_NETNS=1 bash -c \
      'ip link set lo up && exec bash "$0" "$@"' "$@"
  fi
}

bench_netns_only_lo () {
  [ -n "${BENCH_IN_NETNS:-}" ] \
    && [ "$(ip -o link show | awk -F': ' '{print $2}')" = "lo" ]
}

bench_torrent_swarm () {   # DIR FILE PIECE_LOG SEED_IP
  local dir=$1 file=$2 plog=$3 ip=$4 tp
  mkdir -p "$dir/tracker"
  tp=$(bench_free_port)
  TORRENT=$dir/swarm.torrent
  mktorrent -l "$plog" -a "http://127.0.0.1:$tp/announce" -o "$TORRENT" \
    "$file" >/dev/null
  INFO_HASH=$(aria2c -S "$TORRENT" | awk '/^Info Hash:/{print $3}')
  echo "$INFO_HASH" > "$dir/tracker/whitelist.txt"
  chmod 755 "$dir" "$dir/tracker"; chmod 644 "$dir/tracker/whitelist.txt"
  (cd "$dir/tracker" && exec opentracker -i 127.0.0.1 -p "$tp" -P "$tp" \
     -d "$dir/tracker" -u nobody -w whitelist.txt) >"$dir/opentracker.log" 2>&1 &
  TRACKER_PID=$!
  SEEDER_RPC_PORT=$(bench_free_port)
  aria2c --no-conf --enable-dht=false --enable-dht6=false --bt-enable-lpd=false \
    --enable-peer-exchange=false --disable-ipv6=true --interface="$ip" \
    --file-allocation=none --summary-interval=0 --seed-ratio=0.0 \
    --check-integrity=true --enable-rpc=true --rpc-listen-port="$SEEDER_RPC_PORT" \
    --dir="$(dirname "$file")" --listen-port="$(bench_free_port)" \
    --log="$dir/aria2.log" --log-level=info \
    "$TORRENT" >"$dir/aria2.out" 2>&1 &
  SEEDER_PID=$!
  local _
  for _ in $(seq 1 300); do
    curl -s "http://127.0.0.1:$tp/scrape?info_hash=$(sed 's/../%&/g' <<<"$INFO_HASH")" \
      | grep -aq 'completei1e' && return 0
    sleep 0.2
  done
  echo "bench: the aria2c seeder did not reach the tracker (see $dir/aria2.log)" >&2
  return 1
}

bench_seeder_uploaded () {
  curl -s --max-time 10 "http://127.0.0.1:$SEEDER_RPC_PORT/jsonrpc" \
    -d '{"jsonrpc":"2.0","id":"b","method":"aria2.tellActive","params":[["uploadLength"]]}' \
    | /usr/bin/python3 -c 'import json,sys; print(sum(int(d["uploadLength"]) for d in json.load(sys.stdin)["result"]))'
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
