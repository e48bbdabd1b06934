#!/bin/bash
# Install everything diskshelf needs to build, test and benchmark on
# Debian 12.  Idempotent: does nothing when every package is present.
set -euo pipefail

packages=(
  # build
  gcc meson ninja-build pkg-config
  libfuse3-dev libcurl4-gnutls-dev liblzma-dev libarchive-dev libgnutls28-dev
  # fuzzing (scripts/fuzz.sh): clang with libFuzzer and the sanitizers
  clang libclang-rt-14-dev
  # run
  fuse3
  # tests: the real peers and the tools that make test data
  python3-pytest python3-pytest-timeout
  nbdkit qemu-utils nbd-server nginx-light gnutls-bin
  xz-utils tar e2fsprogs util-linux coreutils
  # service tests: systemd-analyze verify, man -l
  systemd man-db
  # VM boots from the mount: qemu, a Debian kernel for the guest, and the
  # tools that make a bootable image without loop mounts
  qemu-system-x86 linux-image-amd64 syslinux syslinux-common mtools dosfstools
  busybox-static fdisk kmod
  # tests: the BitTorrent swarm (tracker, seeders, independent leechers)
  opentracker aria2 mktorrent transmission-cli transmission-daemon
  python3-libtorrent
  # benchmarks: the competing tools
  libnbd-bin fio
  # bench_torrent.sh: btfs (nbdkit's torrent plugin comes with nbdkit)
  btfs
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
