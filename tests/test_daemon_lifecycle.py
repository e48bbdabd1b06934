"""The daemon's life: background start that returns once usable, clear
failures, signals and unmount, options, and catalog reloads."""

import os
import signal
import subprocess

import pytest

from conftest import assert_clean_output, is_mounted
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


def test_background_start_returns_when_usable(diskshelf, catalog, image, tmp_path,
                                              background):
    write_entry(catalog, "x.img", f"source = {image}\n")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run([diskshelf, "--cache-dir=none", catalog, mnt], capture_output=True,
                       text=True, timeout=scaled(60), env=background.env)
    try:
        assert r.returncode == 0, r.stderr
        assert_clean_output(r.stderr)
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
    code = 1
    if case == "missing-mountpoint":
        args = [catalog, tmp_path / "nope"]
        expect = ["mountpoint", "nope"]
        code = 2
    elif case == "missing-catalog":
        args = [tmp_path / "nocat", mnt]
        expect = ["catalog directory", "nocat"]
        code = 2
    elif case == "catalog-is-file":
        args = [image, mnt]
        expect = ["Not a directory"]
    elif case == "bad-fuse-option":
        args = ["-o", "no_such_fuse_option", catalog, mnt]
        # libfuse names the option; the daemon says what to do about it,
        # before any entry was opened.
        expect = ["unknown option(s): `-o no_such_fuse_option'",
                  "-o no_such_fuse_option: an option above is neither a diskshelf nor a FUSE"
                  " option"]
    elif case == "bad-size":
        args = ["--cache-size=lots", catalog, mnt]
        expect = ["'lots' is not a size"]
        code = 2
    elif case == "unknown-option":
        args = ["--frobnicate", catalog, mnt]
        expect = ["unknown option '--frobnicate'"]
        code = 2
    r = subprocess.run([diskshelf, "--cache-dir=none", *args], capture_output=True, text=True,
                       timeout=scaled(60))
    # Exactly the documented status: a leak report would change it (and
    # its text is checked too).
    assert r.returncode == code, r.stderr
    assert_clean_output(r.stderr)
    assert "diskshelf" in r.stderr
    for text in expect:
        assert text in r.stderr, r.stderr
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
    """fstab passes only -o, after the positional arguments; each option
    takes effect, and fstab-only words are accepted and ignored."""
    write_entry(catalog, "x.img", f"source = {image}\n")
    cache = tmp_path / "ocache"
    m = mount(catalog, "-o", f"cache-dir={cache},memory-cache-size=32M,cache-size=1G,"
              "default_permissions,ro,nofail,_netdev,x-systemd.automount")
    assert (m.path / "x.img").read_bytes() == image.read_bytes()
    status = m.status()
    assert f"cache-dir: {cache}\n" in status
    assert f"cache-size: {1 << 30}\n" in status
    assert f"memory-cache-size: {32 << 20}\n" in status
    assert "read-only: yes\n" in status and "mode: read-only" in status
    assert cache.is_dir()
    with open("/proc/self/mountinfo") as f:
        line = next(ln for ln in f if f" {m.path} " in ln)
    assert "default_permissions" in line
    for word in ("nofail", "_netdev", "x-systemd"):
        assert word not in line


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


def test_sighup_reloads(mount, catalog, image, tmp_path):
    """A change inotify cannot see (the .conf is a symbolic link to a file
    elsewhere) is picked up by SIGHUP."""
    other = tmp_path / "other.img"
    other.write_bytes(os.urandom(2 << 20))
    outside = tmp_path / "outside"
    outside.mkdir()
    real = write_entry(outside, "a.img", f"source = {image}\n")
    (catalog / "a.img.conf").symlink_to(real)
    m = mount(catalog)
    assert (m.path / "a.img").read_bytes() == image.read_bytes()
    reloads = m.log().count("catalog reloaded")
    write_entry(outside, "a.img", f"source = {other}\n")
    # No reload happens by itself: the catalog directory did not change.
    assert m.log().count("catalog reloaded") == reloads
    assert os.stat(m.path / "a.img").st_size == 1 << 20
    os.kill(m.pid, signal.SIGHUP)
    m.wait_log("SIGHUP: reloading the catalog")
    wait_for(lambda: m.log().count("catalog reloaded") > reloads, 30, "the reload")
    wait_for(lambda: os.stat(m.path / "a.img").st_size == 2 << 20, 30, "the new source")
    assert (m.path / "a.img").read_bytes() == other.read_bytes()
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
    assert_clean_output(r.stderr)


def test_fstab_style_mount_via_mount_fuse3(diskshelf, catalog, image, tmp_path, background):
    """An fstab line `CATALOG MNT fuse.diskshelf OPTS` runs mount.fuse3, which
    runs `diskshelf CATALOG MNT -o OPTS`: options after the positionals."""
    write_entry(catalog, "x.img", f"source = {image}\n")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "diskshelf").symlink_to(os.path.abspath(diskshelf))
    env = dict(background.env, PATH=f"{bindir}:{os.environ['PATH']}")
    r = subprocess.run(["mount.fuse3", catalog, mnt, "-t", "diskshelf", "-o",
                        "cache-dir=none,memory-cache-size=64M,nofail,_netdev,allow_other"],
                       env=env, capture_output=True, text=True, timeout=scaled(60))
    try:
        assert r.returncode == 0, r.stderr
        assert_clean_output(r.stderr)
        assert is_mounted(mnt)
        assert (mnt / "x.img").read_bytes() == image.read_bytes()
        pid = daemon_pid(mnt)
    finally:
        subprocess.run(["fusermount3", "-u", mnt], timeout=scaled(30))
    wait_gone(pid)
