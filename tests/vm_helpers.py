"""Booting real VMs (qemu-system-x86_64 under TCG) from files of the mount.

- boot_sector(token): a 512-byte image whose code prints
  "DISKSHELF-BOOT-<token>" to COM1 and leaves qemu through the
  isa-debug-exit device (qemu's exit status is then QEMU_EXIT_OK).
- build_linux_image(dir): a small bootable disk made without loop mounts
  (syslinux on FAT + the host's Debian kernel + a busybox initramfs, and an
  ext4 root holding a data file and its sha256).  The guest checks the
  sha256, prints what earlier boots wrote, appends a line of its own,
  prints a marker and powers off.
- Qemu: one VM, started in its own session, stopped by PID, bounded by a
  timeout; it records the time from start to the marker.

Run as a script (`python3 tests/vm_helpers.py build DIR`) it builds the
Linux image for bench/bench_boot.sh.
"""

import glob
import gzip
import os
import pathlib
import re
import subprocess
import sys
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from peers import make_random_file, run, scaled, stop_process  # noqa: E402

QEMU_EXIT_OK = 33          # isa-debug-exit: (0x10 << 1) | 1
LINUX_MARKER = "DS-MARKER-DONE"
LINUX_DATA_SIZE = 2 << 20


def boot_sector(token):
    """512 bytes: 16-bit code that writes the marker line to port 0x3f8
    (COM1) and then 0x10 to port 0xf4 (isa-debug-exit)."""
    message = f"DISKSHELF-BOOT-{token}\r\n".encode() + b"\0"
    code = bytes([
        0xFA,                    # cli
        0x31, 0xC0,              # xor ax, ax
        0x8E, 0xD8,              # mov ds, ax
        0xBE, 0x1A, 0x7C,        # mov si, 0x7c00 + 26 (the message)
        0xBA, 0xF8, 0x03,        # mov dx, 0x3f8
        0xAC,                    # next: lodsb
        0x84, 0xC0,              # test al, al
        0x74, 0x03,              # jz done
        0xEE,                    # out dx, al
        0xEB, 0xF8,              # jmp next
        0xB0, 0x10,              # done: mov al, 0x10
        0xE6, 0xF4,              # out 0xf4, al
        0xF4,                    # halt: hlt
        0xEB, 0xFD,              # jmp halt
    ])
    assert len(code) == 26
    image = code + message
    return image + bytes(510 - len(image)) + b"\x55\xaa"


def boot_marker(token):
    return f"DISKSHELF-BOOT-{token}"


class Qemu:
    """One qemu-system-x86_64 VM (TCG, -nographic, serial on stdio) booting
    from `drive` (a -drive option string).  `wait()` returns the exit code;
    `marker_time` is seconds from start to the first line containing
    `marker`."""

    def __init__(self, drive, log_path, marker, memory=256, extra=()):
        self.log_path = pathlib.Path(log_path)
        self.marker = marker
        self.marker_time = None
        argv = ["qemu-system-x86_64", "-nographic", "-no-reboot", "-accel", "tcg",
                "-m", str(memory), "-nic", "none", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
                "-drive", drive, *extra]
        self.start = time.monotonic()
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        with open(self.log_path, "wb") as log:
            for line in self.proc.stdout:
                log.write(line)
                log.flush()
                if self.marker_time is None and self.marker.encode() in line:
                    self.marker_time = time.monotonic() - self.start

    def wait(self, timeout):
        """Wait for qemu to exit by itself; on timeout stop it by PID and
        raise."""
        try:
            code = self.proc.wait(timeout=scaled(timeout))
        except subprocess.TimeoutExpired:
            stop_process(self.proc, timeout=5)
            self.reader.join(timeout=10)
            raise TimeoutError(f"qemu did not finish in {scaled(timeout):.0f}s:\n"
                               + self.output()[-3000:])
        self.reader.join(timeout=10)
        return code

    def stop(self):
        stop_process(self.proc, timeout=5)

    def output(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


def boot(drive, log_path, marker, timeout, **kw):
    """Boot once; returns (exit code, serial output, seconds to marker)."""
    vm = Qemu(drive, log_path, marker, **kw)
    try:
        code = vm.wait(timeout)
    finally:
        vm.stop()
    return code, vm.output(), vm.marker_time


# ---------------------------------------------------------------------------
# The Linux image

# Modules the guest needs (their dependencies are added, in order): the
# IDE disk (ata_piix), SCSI disks, ext4, and the checksum drivers that
# ext4 and sd_mod look up by name at run time.
GUEST_MODULES = ["crc64_rocksoft_generic", "crct10dif_generic", "crc32c_generic",
                 "ata_piix", "sd_mod", "ext4"]


def module_order(version, names):
    """names and their dependencies (modinfo), dependencies first."""
    order, seen = [], set()

    def visit(name):
        name = name.replace("-", "_")
        if name in seen:
            return
        seen.add(name)
        r = subprocess.run(["modinfo", "-k", version, "-F", "depends", name],
                           capture_output=True, text=True)
        for dep in filter(None, r.stdout.strip().split(",")):
            visit(dep)
        order.append(name)

    for n in names:
        visit(n)
    return order


GUEST_INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules.order); do insmod /lib/modules/$m.ko || echo "DS-INSMOD-FAIL $m" >/dev/ttyS0; done
i=0
while [ ! -b /dev/sda2 ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done
if ! mount -t ext4 /dev/sda2 /mnt; then
  echo DS-FAIL-MOUNT >/dev/ttyS0
  poweroff -f
fi
cd /mnt
if sha256sum -c -s data.sha256; then echo DS-SHA-OK >/dev/ttyS0; else echo DS-SHA-BAD >/dev/ttyS0; fi
echo "DS-PREV: $(cat boots.txt 2>/dev/null | tr '\n' ' ')" >/dev/ttyS0
tok=boot-$(cat /proc/sys/kernel/random/uuid)
echo "$tok" >>boots.txt
sync
cd /
umount /mnt
echo "DS-WROTE: $tok" >/dev/ttyS0
echo DS-MARKER-DONE >/dev/ttyS0
poweroff -f
"""

SYSLINUX_CFG = """SERIAL 0 115200
DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  KERNEL vmlinuz
  APPEND initrd=initrd.img console=ttyS0 quiet panic=-1 rdinit=/init
"""


def newc_cpio(entries):
    """An uncompressed newc cpio archive of (name, mode, bytes) entries."""
    out = bytearray()
    ino = 1
    for name, mode, data in list(entries) + [("TRAILER!!!", 0, b"")]:
        name_b = name.encode() + b"\0"
        fields = [0x070701, ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name_b), 0]
        header = "070701" + "".join(f"{v:08x}" for v in fields[1:])
        out += header.encode() + name_b
        out += bytes((4 - len(out) % 4) % 4)
        out += data
        out += bytes((4 - len(out) % 4) % 4)
        ino += 1
    return bytes(out)


def host_kernel():
    """(version, vmlinuz path) of the newest Debian kernel installed."""
    kernels = sorted(glob.glob("/boot/vmlinuz-*"))
    if not kernels:
        raise RuntimeError("no /boot/vmlinuz-*: install linux-image-amd64"
                           " (scripts/install-deps.sh)")
    path = kernels[-1]
    return path.split("vmlinuz-", 1)[1], path


def make_initramfs(version):
    """busybox + the guest's modules + /init: a gzip'd newc cpio (a third
    of the bytes for the BIOS to read, which is slow under TCG)."""
    entries = [("dev", 0o40755, b""), ("proc", 0o40755, b""), ("sys", 0o40755, b""),
               ("mnt", 0o40755, b""), ("bin", 0o40755, b""), ("lib", 0o40755, b""),
               ("lib/modules", 0o40755, b"")]
    entries.append(("bin/busybox", 0o100755, pathlib.Path("/bin/busybox").read_bytes()))
    order = []
    for name in module_order(version, GUEST_MODULES):
        r = subprocess.run(["modinfo", "-k", version, "-F", "filename", name],
                           capture_output=True, text=True)
        path = r.stdout.strip()
        if r.returncode != 0 or not path or path == "(builtin)":
            continue          # built in, or not in this kernel
        data = pathlib.Path(path).read_bytes()
        if path.endswith(".xz"):
            data = subprocess.run(["xz", "-dc", path], capture_output=True, check=True).stdout
        elif path.endswith(".zst"):
            data = subprocess.run(["zstd", "-dc", path], capture_output=True,
                                  check=True).stdout
        entries.append((f"lib/modules/{name}.ko", 0o100644, data))
        order.append(name)
    entries.append(("modules.order", 0o100644, ("\n".join(order) + "\n").encode()))
    entries.append(("init", 0o100755, GUEST_INIT.encode()))
    return gzip.compress(newc_cpio(entries), 6)


def build_linux_image(directory):
    """Build DIR/linux.img (about 30 MiB) once; returns its path and the
    sha256 of its data file."""
    d = pathlib.Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    image = d / "linux.img"
    if image.exists():
        return image
    version, vmlinuz = host_kernel()
    (d / "initrd.img").write_bytes(make_initramfs(version))
    (d / "syslinux.cfg").write_text(SYSLINUX_CFG)
    # Partition 1: FAT with syslinux, kernel, initramfs.
    p1 = d / "p1.img"
    if p1.exists():
        p1.unlink()
    run(["mkfs.vfat", "-C", p1, str(16 * 1024)])
    run(["syslinux", "--install", p1])
    for src, name in ((vmlinuz, "vmlinuz"), (d / "initrd.img", "initrd.img"),
                      (d / "syslinux.cfg", "syslinux.cfg")):
        run(["mcopy", "-i", p1, src, f"::/{name}"])
    # Partition 2: ext4 root with a data file and its checksum.
    root = d / "root"
    root.mkdir(exist_ok=True)
    make_random_file(root / "data.bin", LINUX_DATA_SIZE, seed=42)
    digest = subprocess.run(["sha256sum", "data.bin"], cwd=root, capture_output=True,
                            text=True, check=True).stdout
    (root / "data.sha256").write_text(digest)
    p2 = d / "p2.img"
    if p2.exists():
        p2.unlink()
    run(["mkfs.ext4", "-q", "-F", "-d", root, p2, "12M"])
    # The disk: MBR + partition table + both partitions.
    tmp = d / "linux.img.tmp"
    with open(tmp, "wb") as f:
        f.truncate(29 << 20)
    run(["dd", "if=/usr/lib/syslinux/mbr/mbr.bin", f"of={tmp}", "bs=440", "count=1",
         "conv=notrunc", "status=none"])
    subprocess.run(["sfdisk", "-q", str(tmp)], input="1MiB,16MiB,c,*\n17MiB,,83\n",
                   text=True, check=True, capture_output=True, timeout=60)
    run(["dd", f"if={p1}", f"of={tmp}", "bs=1M", "seek=1", "conv=notrunc", "status=none"])
    run(["dd", f"if={p2}", f"of={tmp}", "bs=1M", "seek=17", "conv=notrunc", "status=none"])
    tmp.rename(image)
    for f in (p1, p2, d / "initrd.img"):
        f.unlink()
    return image


def linux_result(output):
    """What the guest printed: sha ok, the lines of earlier boots, the
    line it wrote."""
    prev = re.search(r"DS-PREV: ?(.*)", output)
    wrote = re.search(r"DS-WROTE: (\S+)", output)
    return {"sha_ok": "DS-SHA-OK" in output,
            "prev": prev.group(1).split() if prev else None,
            "wrote": wrote.group(1) if wrote else None,
            "done": LINUX_MARKER in output}


def main(argv):
    """build DIR: make DIR/linux.img; boot FILE LOG [DRIVE-OPTS]: boot it
    and print the seconds to the marker (for bench/bench_boot.sh)."""
    if len(argv) == 2 and argv[0] == "build":
        print(build_linux_image(argv[1]))
        return 0
    if len(argv) in (3, 4) and argv[0] == "boot":
        opts = "," + argv[3] if len(argv) == 4 else ""
        code, out, seconds = boot(f"file={argv[1]},format=raw{opts}", argv[2], LINUX_MARKER,
                                  300)
        result = linux_result(out)
        if code != 0 or not result["done"] or not result["sha_ok"] or seconds is None:
            print(f"boot failed (exit {code}), see {argv[2]}", file=sys.stderr)
            return 1
        print(f"{seconds:.2f}")
        return 0
    print("usage: vm_helpers.py build DIR | boot FILE LOG [DRIVE-OPTS]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
