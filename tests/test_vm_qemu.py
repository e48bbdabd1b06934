"""What qemu does to a file of the mount: a boot sector booted with the
plain `-drive file=mnt/x.img,format=raw` from every source kind (read-only
ones with `overlay = discard`; the torrent from a loopback swarm of
opentracker and aria2c), cache=none (O_DIRECT) with aio=threads,
native and io_uring, qemu's image locking (OFD locks), and qemu-img info,
check and compare over entries whose content is qcow2 or vmdk, also
through a tar member over HTTP."""

import json
import os
import subprocess

import pytest

from bt_helpers import Aria2Seeder, Tracker, info_hash, make_torrent
from nbd_helpers import NbdServer
from peers import run, scaled, sha256, wait_for, write_entry
from tar_helpers import status_section
from vm_helpers import QEMU_EXIT_OK, Qemu, boot, boot_marker, boot_sector
from xz_helpers import xz

SOURCES = ["file", "http", "http-xz", "tar-member", "nbdkit", "captive-qcow2", "torrent"]


def place_boot_source(kind, token, tmp_path, nginx):
    """Make the boot sector available as `kind`; returns (entry text,
    a cleanup callable, the file the bytes came from)."""
    raw = tmp_path / "boot.img"
    raw.write_bytes(boot_sector(token))
    if kind == "file":
        return f"source = {raw}\n", None, raw
    if kind == "http":
        (nginx.root / "boot.img").write_bytes(raw.read_bytes())
        return f"source = {nginx.url('boot.img')}\noverlay = discard\n", None, raw
    if kind == "http-xz":
        xz(raw, nginx.root / "boot.img.xz")
        return f"source = {nginx.url('boot.img.xz')}\noverlay = discard\n", None, raw
    if kind == "tar-member":
        run(["tar", "-cf", tmp_path / "disks.tar", "-C", tmp_path, "boot.img"])
        return (f"source = {tmp_path / 'disks.tar'}\nentry = boot.img\noverlay = discard\n",
                None, tmp_path / "disks.tar")
    if kind == "nbdkit":
        server = NbdServer("nbdkit", raw, tmp_path / "nbd").start()
        return f"source = {server.uri()}\n", server.stop, raw
    if kind == "captive-qcow2":
        qcow2 = tmp_path / "boot.qcow2"
        run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, qcow2])
        return f"command = qemu-nbd -f qcow2 {qcow2}\n", None, qcow2
    if kind == "torrent":
        return place_torrent(raw, tmp_path)
    raise ValueError(kind)


def place_torrent(raw, tmp_path):
    """Seed the boot sector from aria2c through opentracker; the daemon
    fetches it as a peer of that swarm."""
    tracker = Tracker(tmp_path / "tracker").start()
    seeder = None
    try:
        torrent = make_torrent(raw, tmp_path / "boot.torrent", tracker.http)
        tracker.allow(info_hash(torrent))
        seeder = Aria2Seeder(tmp_path / "seed", raw.parent, [torrent]).start()
        wait_for(lambda: tracker.complete(info_hash(torrent)) >= 1, 30, "the seeder")
    except BaseException:
        if seeder:
            seeder.stop()
        tracker.stop()
        raise

    def cleanup():
        seeder.stop()
        tracker.stop()
    return f"source = {torrent}\noverlay = discard\n", cleanup, raw


@pytest.mark.parametrize("kind", SOURCES)
def test_boot_sector_from_every_source(kind, mount, catalog, tmp_path, nginx):
    token = f"{kind}-{os.getpid()}"
    text, cleanup, origin = place_boot_source(kind, token, tmp_path, nginx)
    before = sha256(origin)
    try:
        write_entry(catalog, "boot.img", text)
        m = mount(catalog)
        code, out, _ = boot(f"file={m.path / 'boot.img'},format=raw", tmp_path / "serial.log",
                            boot_marker(token), timeout=60)
        assert code == QEMU_EXIT_OK, out[-2000:]
        assert boot_marker(token) in out
        assert m.unmount() == 0
    finally:
        if cleanup:
            cleanup()
    assert sha256(origin) == before


@pytest.mark.parametrize("cache", ["cache=none", "cache=none,aio=native",
                                   "cache=none,aio=io_uring", "aio=io_uring",
                                   "cache=writeback"])
def test_boot_sector_cache_and_aio_modes(cache, mount, catalog, tmp_path, nginx):
    token = "cache-" + cache.replace(",", "-").replace("=", "-")
    text, _, _ = place_boot_source("http-xz", token, tmp_path, nginx)
    write_entry(catalog, "boot.img", text)
    m = mount(catalog)
    code, out, _ = boot(f"file={m.path / 'boot.img'},format=raw,{cache}",
                        tmp_path / "serial.log", boot_marker(token), timeout=60)
    assert code == QEMU_EXIT_OK, out[-2000:]
    assert boot_marker(token) in out


def test_o_direct_wants_sector_alignment(mount, catalog, tmp_path):
    img = tmp_path / "disk.img"
    img.write_bytes(os.urandom((1 << 20) + 100))      # the last sector is short
    write_entry(catalog, "disk.img", f"source = {img}\noverlay = discard\n")
    m = mount(catalog)
    import mmap
    buf = mmap.mmap(-1, 8192)
    fd = os.open(m.path / "disk.img", os.O_RDWR | os.O_DIRECT)
    try:
        assert os.preadv(fd, [memoryview(buf)[:4096]], 512) == 4096
        assert bytes(buf[:4096]) == img.read_bytes()[512:4608]
        buf[:4096] = b"z" * 4096
        assert os.pwritev(fd, [memoryview(buf)[:4096]], 8192) == 4096
        with pytest.raises(OSError):
            os.preadv(fd, [memoryview(buf)[:100]], 1)
        # A read that runs into the end of the image is cut there, not refused.
        assert os.preadv(fd, [memoryview(buf)[:4096]], 1 << 20) == 100
        assert bytes(buf[:100]) == img.read_bytes()[1 << 20:]
    finally:
        os.close(fd)


def holds_ofd_lock(path):
    """True when /proc/locks lists an OFD lock on path's inode."""
    st = os.stat(path)
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    with open("/proc/locks") as f:
        return any("OFDLCK" in line and key in line.split() for line in f)


def test_qemu_image_locking(mount, catalog, tmp_path, nginx):
    """qemu takes OFD locks on the image: a second VM on the same file is
    refused, while a VM on another entry of the same source starts."""
    text, _, _ = place_boot_source("http", "lock", tmp_path, nginx)
    write_entry(catalog, "a.img", text)
    write_entry(catalog, "b.img", text)
    m = mount(catalog)
    # -S: stop the CPU at start, so the VM holds its locks until stopped.
    first = Qemu(f"file={m.path / 'a.img'},format=raw", tmp_path / "first.log", "-",
                 extra=["-S"])
    try:
        wait_for(lambda: holds_ofd_lock(m.path / "a.img"), 30, "qemu to lock a.img")
        second = subprocess.run(["qemu-system-x86_64", "-nographic", "-nic", "none", "-S",
                                 "-drive", f"file={m.path / 'a.img'},format=raw"],
                                capture_output=True, text=True, timeout=scaled(60),
                                stdin=subprocess.DEVNULL)
        assert second.returncode != 0
        assert 'Failed to get "write" lock' in second.stderr
        info = subprocess.run(["qemu-img", "info", "--force-share", m.path / "a.img"],
                              capture_output=True, text=True, timeout=scaled(60))
        assert info.returncode == 0, info.stderr
        other = Qemu(f"file={m.path / 'b.img'},format=raw", tmp_path / "other.log", "-",
                     extra=["-S"])
        try:
            # Still running after a while: it got its locks.
            with pytest.raises(subprocess.TimeoutExpired):
                other.proc.wait(timeout=3)
        finally:
            other.stop()
    finally:
        first.stop()


@pytest.fixture
def qemu_images(tmp_path):
    """raw.img (8 MiB with data), its qcow2 and a streamOptimized vmdk in
    an OVA (tar), and the qcow2 in a tar.xz."""
    raw = tmp_path / "raw.img"
    with open(raw, "wb") as f:
        f.truncate(8 << 20)
        for off in (0, 1 << 20, 5 << 20):
            f.seek(off)
            f.write(os.urandom(300000))
    run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, tmp_path / "disk.qcow2"])
    run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized",
         raw, tmp_path / "disk.vmdk"])
    (tmp_path / "vm.ovf").write_text("<Envelope/>\n")
    run(["tar", "--format=ustar", "-cf", tmp_path / "vm.ova", "-C", tmp_path, "vm.ovf",
         "disk.vmdk"])
    run(["tar", "-cf", tmp_path / "qcow.tar", "-C", tmp_path, "disk.qcow2"])
    xz(tmp_path / "qcow.tar", tmp_path / "qcow.tar.xz", "--block-size=1MiB")
    return raw


def test_qemu_img_info_check_compare(mount, catalog, tmp_path, nginx, qemu_images):
    raw = qemu_images
    (nginx.root / "qcow.tar.xz").write_bytes((tmp_path / "qcow.tar.xz").read_bytes())
    write_entry(catalog, "q.qcow2", f"source = {tmp_path / 'disk.qcow2'}\nreadonly = yes\n")
    write_entry(catalog, "ova.vmdk", f"source = {tmp_path / 'vm.ova'}\nentry = disk.vmdk\n")
    write_entry(catalog, "web.qcow2", f"source = {nginx.url('qcow.tar.xz')}\n"
                f"entry = disk.qcow2\n")
    m = mount(catalog)
    assert status_section(m.status(), "web.qcow2")["stack"] == "tar < xz < http"
    for name, fmt in (("q.qcow2", "qcow2"), ("ova.vmdk", "vmdk"), ("web.qcow2", "qcow2")):
        path = m.path / name
        info = json.loads(run(["qemu-img", "info", "--output=json", path]).stdout)
        assert info["format"] == fmt and info["virtual-size"] == 8 << 20, info
        cmp = subprocess.run(["qemu-img", "compare", "-f", fmt, "-F", "raw", path, raw],
                             capture_output=True, text=True, timeout=scaled(120))
        assert cmp.returncode == 0 and "Images are identical" in cmp.stdout, cmp
        if fmt == "qcow2":
            check = subprocess.run(["qemu-img", "check", "-f", fmt, path], capture_output=True,
                                   text=True, timeout=scaled(120))
            assert check.returncode == 0 and "No errors were found" in check.stdout, check
    # vmdk: check is supported for streamOptimized too.
    check = subprocess.run(["qemu-img", "check", "-f", "vmdk", m.path / "ova.vmdk"],
                           capture_output=True, text=True, timeout=scaled(120))
    assert check.returncode == 0, check
