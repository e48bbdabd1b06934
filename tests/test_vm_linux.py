"""Real Linux boots from the mount (TCG): syslinux + the Debian kernel + a
busybox initramfs on one disk image whose ext4 root holds a data file.
The guest checks the file's sha256, prints what earlier boots wrote,
appends its own line, prints a marker and powers off.

Booted as xz over HTTP with overlay = discard (time to marker reported
against the local raw file), twice with a persistent overlay (the second
boot finds the first boot's line), as a member of a tar.xz, and as a
golden image: two VMs at once over one xz source, each with its own
discard overlay, neither seeing the other's writes."""

import os
import shutil
import threading

import pytest

from peers import run, sha256, wait_for, write_entry
from tar_helpers import status_section
from vm_helpers import LINUX_MARKER, Qemu, boot, build_linux_image, linux_result
from xz_helpers import xz

BOOT_TIMEOUT = 180


@pytest.fixture(scope="session")
def linux_image(tmp_path_factory):
    """The bootable image, built once per session, with its xz and tar.xz."""
    d = tmp_path_factory.mktemp("linux")
    image = build_linux_image(d)
    xz(image, d / "linux.img.xz", "-T1", "--block-size=1MiB")
    run(["tar", "-cf", d / "vm.tar", "-C", d, "linux.img"])
    xz(d / "vm.tar", d / "vm.tar.xz", "-T1", "--block-size=1MiB")
    return d


def serve(nginx, linux_image, *names):
    for name in names:
        os.link(linux_image / name, nginx.root / name) if not (nginx.root / name).exists() \
            else None


def boot_linux(path, log):
    code, out, seconds = boot(f"file={path},format=raw", log, LINUX_MARKER, BOOT_TIMEOUT)
    result = linux_result(out)
    assert code == 0, out[-3000:]
    assert result["done"] and result["sha_ok"], out[-3000:]
    return result, seconds


def test_linux_boot_xz_over_http_with_discard(mount, catalog, tmp_path, nginx, linux_image):
    serve(nginx, linux_image, "linux.img.xz")
    source_sum = sha256(nginx.root / "linux.img.xz")
    # The limit: the same boot from a local copy of the raw file.
    local = tmp_path / "local.img"
    shutil.copyfile(linux_image / "linux.img", local)
    _, local_seconds = boot_linux(local, tmp_path / "local.log")

    write_entry(catalog, "linux.img", f"source = {nginx.url('linux.img.xz')}\n"
                "overlay = discard\n")
    m = mount(catalog)
    result, seconds = boot_linux(m.path / "linux.img", tmp_path / "mount.log")
    assert result["prev"] == [] and result["wrote"]
    print(f"\nboot to marker: local raw {local_seconds:.1f}s, diskshelf http+xz (cold) "
          f"{seconds:.1f}s, ratio {seconds / local_seconds:.2f}")
    # qemu closed the file: its writes were dropped, the source is as it was.
    wait_for(lambda: status_section(m.status(), "linux.img").get("overlay-drops") == "1", 30,
             "the discard store to be dropped")
    assert sha256(m.path / "linux.img") == sha256(linux_image / "linux.img")
    assert sha256(nginx.root / "linux.img.xz") == source_sum


def test_linux_persistent_overlay_keeps_the_guests_writes(mount, catalog, tmp_path, nginx,
                                                          linux_image):
    serve(nginx, linux_image, "linux.img.xz")
    ovl = tmp_path / "linux.overlay"
    write_entry(catalog, "linux.img", f"source = {nginx.url('linux.img.xz')}\n"
                f"overlay = {ovl}\n")
    m = mount(catalog)
    first, _ = boot_linux(m.path / "linux.img", tmp_path / "first.log")
    assert first["prev"] == []
    st = status_section(m.status(), "linux.img")
    assert st["overlay"] == str(ovl) and int(st["overlay-allocated"].split()[0]) > 0
    assert m.unmount() == 0
    # A new daemon (a restart) finds the first boot's line on the disk.
    m2 = mount(catalog)
    second, _ = boot_linux(m2.path / "linux.img", tmp_path / "second.log")
    assert second["prev"] == [first["wrote"]]
    assert second["wrote"] != first["wrote"]


def test_linux_boot_tar_xz_member(mount, catalog, tmp_path, nginx, linux_image):
    serve(nginx, linux_image, "vm.tar.xz")
    write_entry(catalog, "linux.img", f"source = {nginx.url('vm.tar.xz')}\n"
                "entry = linux.img\noverlay = discard\n")
    m = mount(catalog)
    assert status_section(m.status(), "linux.img")["stack"] == "overlay < tar < xz < http"
    result, _ = boot_linux(m.path / "linux.img", tmp_path / "tar.log")
    assert result["prev"] == [] and result["wrote"]


def test_golden_image_two_vms_at_once(mount, catalog, tmp_path, nginx, linux_image):
    serve(nginx, linux_image, "linux.img.xz")
    source_sum = sha256(nginx.root / "linux.img.xz")
    for name in ("a.img", "b.img"):
        write_entry(catalog, name, f"source = {nginx.url('linux.img.xz')}\noverlay = discard\n")
    m = mount(catalog)
    # Hold each file open so the overlays outlive the VMs for inspection.
    keep = {n: os.open(m.path / n, os.O_RDONLY) for n in ("a.img", "b.img")}
    try:
        vms = {n: Qemu(f"file={m.path / n},format=raw", tmp_path / f"{n}.log", LINUX_MARKER)
               for n in ("a.img", "b.img")}
        codes = {}
        threads = [threading.Thread(target=lambda n=n: codes.__setitem__(
            n, vms[n].wait(BOOT_TIMEOUT))) for n in vms]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for vm in vms.values():
            vm.stop()
        results = {n: linux_result(vms[n].output()) for n in vms}
        for n, r in results.items():
            assert codes.get(n) == 0 and r["done"] and r["sha_ok"], vms[n].output()[-3000:]
            assert r["prev"] == [], f"{n} saw another VM's writes: {r['prev']}"
        # Each disk holds its own guest's line and not the other's.
        size = os.fstat(keep["a.img"]).st_size
        for n, other in (("a.img", "b.img"), ("b.img", "a.img")):
            data = os.pread(keep[n], size, 0)
            assert results[n]["wrote"].encode() in data
            assert results[other]["wrote"].encode() not in data
    finally:
        for fd in keep.values():
            os.close(fd)
    assert sha256(nginx.root / "linux.img.xz") == source_sum
    assert sha256(m.path / "a.img") == sha256(linux_image / "linux.img")
