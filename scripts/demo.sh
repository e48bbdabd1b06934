#!/bin/bash
# Install what is missing, build, make a demo catalog of locally generated
# sample images, mount it, list it, show its status and a few checksums,
# and unmount.  Nothing leaves this machine.
#   DEMO_DIR=/tmp/diskshelf-demo  where the samples, catalog and mount go
#   KEEP_MOUNTED=1                leave the demo mounted for you to explore
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
scripts/install-deps.sh
scripts/build.sh
bin=$top/build/diskshelf

demo=${DEMO_DIR:-/tmp/diskshelf-demo}
samples=$demo/samples
catalog=$demo/catalog
mnt=$demo/mnt
nbdkit_pid=
nginx_pid=
tracker_pid=
seeder_pid=

cleanup() {
  if [ -z "${KEEP_MOUNTED:-}" ]; then
    mountpoint -q "$mnt" && fusermount3 -u "$mnt" || true
    [ -n "$nbdkit_pid" ] && kill "$nbdkit_pid" 2>/dev/null || true
    [ -n "$nginx_pid" ] && kill "$nginx_pid" 2>/dev/null || true
    [ -n "$seeder_pid" ] && kill "$seeder_pid" 2>/dev/null || true
    [ -n "$tracker_pid" ] && kill "$tracker_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT

mountpoint -q "$mnt" 2>/dev/null && fusermount3 -u "$mnt"
rm -rf "$catalog"
mkdir -p "$samples" "$catalog/vm" "$catalog/archives" "$catalog/nbd" "$mnt"

echo "== making sample images in $samples"
if [ ! -f "$samples/tools.img" ]; then
  # A small ext4 file system holding real files.
  mkfs.ext4 -q -F -d /usr/share/perl -L demo "$samples/tools.img" 64M
fi
[ -f "$samples/tools.img.xz" ] || xz -T2 --block-size=4MiB -k -c "$samples/tools.img" > "$samples/tools.img.xz"
[ -f "$samples/tools-1block.img.xz" ] || xz -T1 -1 -c "$samples/tools.img" > "$samples/tools-1block.img.xz"
if [ ! -f "$samples/sparse.img" ]; then
  truncate -s 2G "$samples/sparse.img"
  head -c 1M /dev/urandom | dd of="$samples/sparse.img" bs=1M seek=1000 conv=notrunc status=none
fi
if [ ! -f "$samples/appliance.ova" ]; then
  ( cd "$samples"
    qemu-img convert -f raw -O vmdk -o subformat=streamOptimized tools.img appliance-disk1.vmdk
    printf '<?xml version="1.0"?>\n<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"><References><File ovf:href="appliance-disk1.vmdk" ovf:id="file1"/></References></Envelope>\n' > appliance.ovf
    printf 'SHA256(appliance.ovf)= %s\nSHA256(appliance-disk1.vmdk)= %s\n' \
      "$(sha256sum appliance.ovf | cut -d' ' -f1)" "$(sha256sum appliance-disk1.vmdk | cut -d' ' -f1)" > appliance.mf
    tar --format=ustar -cf appliance.ova appliance.ovf appliance-disk1.vmdk appliance.mf )
fi
if [ ! -f "$samples/images.tar.xz" ]; then
  ( cd "$samples" && head -c 16M /dev/urandom > first.bin \
      && tar --format=gnu -cf images.tar first.bin tools.img appliance-disk1.vmdk \
      && xz -T2 --block-size=4MiB -f images.tar )
fi
[ -f "$samples/vm.qcow2" ] || qemu-img convert -f raw -O qcow2 "$samples/tools.img" "$samples/vm.qcow2"

echo "== writing the catalog in $catalog"
cat > "$catalog/tools.img.conf" <<CONF
# A local raw image, writable.
source = $samples/tools.img
CONF
cat > "$catalog/sparse.img.conf" <<CONF
# A 2 GiB sparse image: holes come through SEEK_HOLE.
source = file://$samples/sparse.img
readonly = yes
CONF
cat > "$catalog/vm/tools-xz.img.conf" <<CONF
# A multi-block xz image: random access, decoded blocks shared in memory.
source = $samples/tools.img.xz
CONF
cat > "$catalog/vm/tools-1block.img.conf" <<CONF
# A single-block xz image: decoded once into the disk cache.
source = $samples/tools-1block.img.xz
CONF
cat > "$catalog/archives/appliance-disk1.vmdk.conf" <<CONF
# One member of an OVA (a tar archive).
source = $samples/appliance.ova
entry = appliance-disk1.vmdk
CONF
cat > "$catalog/archives/appliance.ovf.conf" <<CONF
# The OVF descriptor of the same OVA.
source = $samples/appliance.ova
entry = appliance.ovf
CONF
cat > "$catalog/archives/vmdk-from-tarxz.vmdk.conf" <<CONF
# The last member of a multi-block tar.xz: only the blocks holding tar headers are decoded.
source = $samples/images.tar.xz
entry = appliance-disk1.vmdk
CONF
cat > "$catalog/archives/tools-from-tarxz.img.conf" <<CONF
# A member of a multi-block tar.xz, reached without decoding what is before it.
source = $samples/images.tar.xz
entry = tools.img
CONF
cat > "$catalog/nbd/vm-qcow2.img.conf" <<CONF
# A captive qemu-nbd, started by the daemon with socket activation.
command = qemu-nbd -f qcow2 --read-only $samples/vm.qcow2
CONF
# A loopback web server for the HTTP entries.
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$demo/nginx"
cat > "$demo/nginx/nginx.conf" <<NGINX
daemon off;
user root;
pid $demo/nginx/nginx.pid;
error_log $demo/nginx/error.log;
events { worker_connections 64; }
http {
  access_log $demo/nginx/access.log;
  client_body_temp_path $demo/nginx/body;
  server { listen 127.0.0.1:$port; root $samples; }
}
NGINX
nginx -p "$demo/nginx" -c "$demo/nginx/nginx.conf" &
nginx_pid=$!
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
mkdir -p "$catalog/web"
cat > "$catalog/web/tools.img.conf" <<CONF
# A raw image over HTTP: only the bytes read are fetched, kept in the disk cache.
source = http://127.0.0.1:$port/tools.img
CONF
cat > "$catalog/web/tools-xz.img.conf" <<CONF
# An xz image over HTTP, decompressed with random access.
source = http://127.0.0.1:$port/tools.img.xz
CONF
cat > "$catalog/web/tools-xz-rw.img.conf" <<CONF
# The same xz image, writable: writes go to a private copy-on-write store
# dropped at the last close (how a VM boots with a plain -drive file=...).
source = http://127.0.0.1:$port/tools.img.xz
overlay = discard
CONF

# A loopback BitTorrent swarm: opentracker and one aria2c seeder, both on
# 127.0.0.1 with DHT, LPD and peer exchange off.
pyport='import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
tport=$(/usr/bin/python3 -c "$pyport")
sport=$(/usr/bin/python3 -c "$pyport")
mkdir -p "$demo/tracker" "$demo/seeder"
chmod 755 "$demo/tracker"
rm -f "$samples/tools.torrent"
mktorrent -l 18 -a "http://127.0.0.1:$tport/announce" -o "$samples/tools.torrent" "$samples/tools.img" > /dev/null
PYTHONPATH=$top/tests /usr/bin/python3 -c 'import sys, bt_helpers; print(bt_helpers.info_hash(sys.argv[1]))' \
  "$samples/tools.torrent" > "$demo/tracker/whitelist.txt"
chmod 644 "$demo/tracker/whitelist.txt"
( cd "$demo/tracker" && exec opentracker -i 127.0.0.1 -p "$tport" -P "$tport" -d "$demo/tracker" \
    -w whitelist.txt -u nobody ) > "$demo/tracker/log" 2>&1 &
tracker_pid=$!
aria2c --no-conf --enable-dht=false --enable-dht6=false --bt-enable-lpd=false \
  --enable-peer-exchange=false --disable-ipv6=true --interface=127.0.0.1 \
  --file-allocation=none --summary-interval=0 --seed-ratio=0.0 --check-integrity=true \
  --dir="$samples" --listen-port="$sport" --log="$demo/seeder/aria2.log" --log-level=info \
  "$samples/tools.torrent" > "$demo/seeder/out" 2>&1 &
seeder_pid=$!
# Wait (up to 30 s) until the tracker counts the seeder.
PYTHONPATH=$top/tests /usr/bin/python3 - "$demo/tracker" "$tport" "$(cat "$demo/tracker/whitelist.txt")" <<'PY' || true
import sys, time, bt_helpers
t = bt_helpers.Tracker.__new__(bt_helpers.Tracker)
t.port = int(sys.argv[2])
for _ in range(300):
    if t.complete(sys.argv[3]) >= 1:
        break
    time.sleep(0.1)
PY
cat > "$catalog/web/tools-torrent.img.conf" <<CONF
# The same image from a BitTorrent swarm: pieces fetched on demand and SHA-1 checked.
source = $samples/tools.torrent
CONF
rm -f "$demo/nbdkit.sock"
nbdkit --exit-with-parent -f -U "$demo/nbdkit.sock" -P "$demo/nbdkit.pid" memory 256M &
nbdkit_pid=$!
for _ in $(seq 50); do [ -S "$demo/nbdkit.sock" ] && break; sleep 0.1; done
cat > "$catalog/nbd/scratch.img.conf" <<CONF
# An NBD export over a Unix socket (nbdkit memory plugin), writable.
source = nbd+unix:///?socket=$demo/nbdkit.sock
CONF

echo "== diskshelf check $catalog"
"$bin" check "$catalog" || true

echo "== diskshelf $catalog $mnt"
"$bin" --cache-dir="$demo/cache" "$catalog" "$mnt"

echo "== ls -lR $mnt"
ls -lR "$mnt"

echo "== diskshelf status $mnt"
"$bin" status "$mnt"

echo "== checksums (source vs mount)"
sha256sum "$samples/tools.img" | sed 's/ .*/  (source tools.img)/'
for f in tools.img vm/tools-xz.img vm/tools-1block.img web/tools.img web/tools-xz.img \
         web/tools-torrent.img archives/tools-from-tarxz.img nbd/vm-qcow2.img; do
  if [ -e "$mnt/$f" ]; then sha256sum "$mnt/$f"; fi
done

if [ -e "$mnt/web/tools-xz-rw.img" ]; then
  echo "== a write to the overlay entry web/tools-xz-rw.img (the source is untouched)"
  exec 7<> "$mnt/web/tools-xz-rw.img"
  printf 'written through the overlay' | dd of="$mnt/web/tools-xz-rw.img" bs=1 seek=1048576 conv=notrunc status=none
  dd if="$mnt/web/tools-xz-rw.img" bs=1 skip=1048576 count=27 status=none; echo
  exec 7>&-
  echo "after the last close the overlay is dropped:"
  dd if="$mnt/web/tools-xz-rw.img" bs=1 skip=1048576 count=27 status=none | od -An -c | head -2
fi

if [ -e "$mnt/archives/appliance-disk1.vmdk" ]; then
  echo "== qemu-img info on the OVA member"
  qemu-img info "$mnt/archives/appliance-disk1.vmdk"
fi

if [ -n "${KEEP_MOUNTED:-}" ]; then
  echo "== left mounted on $mnt; unmount with: fusermount3 -u $mnt"
else
  echo "== unmounting"
fi
