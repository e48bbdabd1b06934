"""The daemon's life: background start that returns once usable, clear
failures, signals and unmount, options, and catalog reloads."""

import os
import signal
import subprocess

import pytest

from conftest import is_mounted
from peers import scaled, wait_for, write_entry


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(os.urandom(1 << 20))
    return path


def daemon_pid(mountpoint):
    """The daemon's PID from its status file."""
    for line in (mountpoint / ".diskshelf-status").read_text().splitlines():
        if line.startswith("pid: "):
            return int(line[5:])
    raise AssertionError("no pid in status")


def wait_gone(pid, timeout=20):
    """Wait until a process no longer exists (or is a zombie)."""
    def gone():
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().split(") ")[1].startswith("Z")
        except FileNotFoundError:
            return True
    wait_for(gone, timeout, f"process {pid} to exit")


def test_background_start_returns_when_usable(diskshelf, catalog, image, tmp_path):
    write_entry(catalog, "x.img", f"source = {image}\n")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run([diskshelf, "--cache-dir=none", catalog, mnt], capture_output=True,
                       text=True, timeout=scaled(60))
    try:
        assert r.returncode == 0, r.stderr
        # Usable the moment the command returned: no waiting here.
        assert os.listdir(mnt) == ["x.img"]
        assert (mnt / "x.img").read_bytes() == image.read_bytes()
        pid = daemon_pid(mnt)
    finally:
        subprocess.run(["fusermount3", "-u", mnt], timeout=scaled(30))
    wait_gone(pid)
    assert not is_mounted(mnt)


@pytest.mark.parametrize("case", ["missing-mountpoint", "missing-catalog", "catalog-is-file",
                                  "bad-fuse-option", "bad-size", "unknown-option"])
def test_start_failures_are_clear(diskshelf, catalog, image, tmp_path, case):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    args = [catalog, mnt]
    expect = ""
    if case == "missing-mountpoint":
        args = [catalog, tmp_path / "nope"]
        expect = "mountpoint"
    elif case == "missing-catalog":
        args = [tmp_path / "nocat", mnt]
        expect = "catalog directory"
    elif case == "catalog-is-file":
        args = [image, mnt]
        expect = "Not a directory"
    elif case == "bad-fuse-option":
        args = ["-o", "no_such_fuse_option", catalog, mnt]
        expect = ""
    elif case == "bad-size":
        args = ["--cache-size=lots", catalog, mnt]
        expect = "is not a size"
    elif case == "unknown-option":
        args = ["--frobnicate", catalog, mnt]
        expect = "unknown option"
    r = subprocess.run([diskshelf, "--cache-dir=none", *args], capture_output=True, text=True,
                       timeout=scaled(60))
    assert r.returncode != 0
    assert "diskshelf" in r.stderr
    assert expect in r.stderr
    assert not is_mounted(mnt)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_ends_cleanly(mount, catalog, image, sig):
    write_entry(catalog, "x.img", f"source = {image}\n")
    m = mount(catalog)
    os.kill(m.pid, sig)
    m.proc.wait(timeout=scaled(20))
    assert m.proc.returncode == 0, m.log()
    assert not is_mounted(m.path)
    assert "unmounted" in m.log()


def test_fusermount_unmount_ends_cleanly(mount, catalog, image):
    write_entry(catalog, "x.img", f"source = {image}\n")
    m = mount(catalog)
    with open(m.path / "x.img", "rb") as f:
        f.read(4096)
    subprocess.run(["fusermount3", "-u", m.path], check=True, timeout=scaled(30))
    m.proc.wait(timeout=scaled(20))
    assert m.proc.returncode == 0


def test_help_and_version(diskshelf):
    r = subprocess.run([diskshelf, "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0
    for word in ("CATALOG MOUNTPOINT", "--cache-dir", "--cache-size", "--memory-cache-size",
                 "check CATALOG", "status MOUNTPOINT", "-o "):
        assert word in r.stdout
    r = subprocess.run([diskshelf, "--version"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.startswith("diskshelf ")


def test_options_work_as_o_options(mount, catalog, image, tmp_path):
    """fstab passes only -o, after the positional arguments."""
    write_entry(catalog, "x.img", f"source = {image}\n")
    cache = tmp_path / "ocache"
    m = mount(catalog, "-o", f"cache-dir={cache},memory-cache-size=32M,cache-size=1G,"
              "default_permissions,nofail,_netdev,x-systemd.automount")
    assert (m.path / "x.img").read_bytes() == image.read_bytes()


def test_entry_added_and_removed_without_remount(mount, catalog, image):
    write_entry(catalog, "a.img", f"source = {image}\n")
    m = mount(catalog)
    assert os.listdir(m.path) == ["a.img"]
    write_entry(catalog, "sub/b.img", f"source = {image}\n")
    wait_for(lambda: (m.path / "sub" / "b.img").exists(), 30, "new entry to appear")
    assert (m.path / "sub" / "b.img").read_bytes() == image.read_bytes()
    (catalog / "a.img.conf").unlink()
    wait_for(lambda: not (m.path / "a.img").exists(), 30, "entry to disappear")
    assert "catalog reloaded" in m.log()


def test_open_file_survives_entry_removal(mount, catalog, image, tmp_path):
    write_entry(catalog, "a.img", f"source = {image}\n")
    m = mount(catalog)
    data = image.read_bytes()
    with open(m.path / "a.img", "rb", buffering=0) as f:
        assert f.read(100) == data[:100]
        (catalog / "a.img.conf").unlink()
        wait_for(lambda: not (m.path / "a.img").exists(), 30, "entry to disappear")
        f.seek(len(data) // 2)
        assert f.read(4096) == data[len(data) // 2:len(data) // 2 + 4096]


def test_changed_entry_is_reopened(mount, catalog, image, tmp_path):
    other = tmp_path / "other.img"
    other.write_bytes(os.urandom(2 << 20))
    write_entry(catalog, "a.img", f"source = {image}\n")
    m = mount(catalog)
    assert os.stat(m.path / "a.img").st_size == 1 << 20
    write_entry(catalog, "a.img", f"source = {other}\n")
    wait_for(lambda: os.stat(m.path / "a.img").st_size == 2 << 20, 30, "entry to change")
    assert (m.path / "a.img").read_bytes() == other.read_bytes()


def test_sighup_reloads(mount, catalog, image):
    write_entry(catalog, "a.img", f"source = {image}\n")
    m = mount(catalog)
    os.kill(m.pid, signal.SIGHUP)
    m.wait_log("SIGHUP: reloading the catalog")
    m.wait_log("catalog reloaded")
    assert os.listdir(m.path) == ["a.img"]
    assert is_mounted(m.path)


def test_broken_edit_leaves_other_entries(mount, catalog, image):
    write_entry(catalog, "a.img", f"source = {image}\n")
    write_entry(catalog, "b.img", f"source = {image}\n")
    m = mount(catalog)
    write_entry(catalog, "b.img", "source = /nonexistent\n")
    wait_for(lambda: not (m.path / "b.img").exists(), 30, "broken entry to leave")
    assert (m.path / "a.img").read_bytes() == image.read_bytes()


def test_status_command(diskshelf, mount, catalog, image):
    write_entry(catalog, "a.img", f"source = {image}\nreadonly = yes\n")
    m = mount(catalog)
    r = subprocess.run([diskshelf, "status", m.path], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0
    assert "[a.img]" in r.stdout
    assert "stack: file" in r.stdout
    assert f"size: {1 << 20}" in r.stdout
    assert "mode: read-only" in r.stdout
    r = subprocess.run([diskshelf, "status", image.parent], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 1 and "not a diskshelf mount" in r.stderr


def test_fstab_style_mount_via_mount_fuse3(diskshelf, catalog, image, tmp_path):
    """An fstab line `CATALOG MNT fuse.diskshelf OPTS` runs mount.fuse3, which
    runs `diskshelf CATALOG MNT -o OPTS`: options after the positionals."""
    write_entry(catalog, "x.img", f"source = {image}\n")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "diskshelf").symlink_to(os.path.abspath(diskshelf))
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}")
    r = subprocess.run(["mount.fuse3", catalog, mnt, "-t", "diskshelf", "-o",
                        "cache-dir=none,memory-cache-size=64M,nofail,_netdev,allow_other"],
                       env=env, capture_output=True, text=True, timeout=scaled(60))
    try:
        assert r.returncode == 0, r.stderr
        assert is_mounted(mnt)
        assert (mnt / "x.img").read_bytes() == image.read_bytes()
        pid = daemon_pid(mnt)
    finally:
        subprocess.run(["fusermount3", "-u", mnt], timeout=scaled(30))
    wait_gone(pid)
