"""Captive NBD servers (`command = ...`): started by the daemon with
systemd socket activation, restarted when they die, stopped by PID on
unmount and when their entry is removed."""

import os
import pathlib
import signal
import subprocess
import time

import pytest

from peers import make_random_file, run, scaled, sha256, wait_for, write_entry

MiB = 1 << 20


def children_running(daemon_pid, needle):
    """PIDs of live processes whose parent is daemon_pid and whose command
    line contains needle."""
    found = []
    for d in pathlib.Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[1]) == daemon_pid and needle in cmd:
            found.append(int(d.name))
    return found


@pytest.fixture
def qcow2(tmp_path):
    raw = tmp_path / "source.raw"
    with open(raw, "wb") as f:
        f.truncate(24 * MiB)
        f.write(make_random_file(tmp_path / "r", 3 * MiB, seed=9).read_bytes())
        f.seek(16 * MiB)
        f.write(os.urandom(MiB))
    img = tmp_path / "vm.qcow2"
    run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, img])
    expect = tmp_path / "expect.raw"
    run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", img, expect])
    return img, expect


def test_qcow2_through_qemu_nbd_reads_as_raw(mount, catalog, qcow2):
    img, expect = qcow2
    write_entry(catalog, "vm.img", f"command = qemu-nbd -f qcow2 {img}\n")
    m = mount(catalog)
    path = m.path / "vm.img"
    assert os.stat(path).st_size == os.stat(expect).st_size
    assert sha256(path) == sha256(expect)
    # Holes of the qcow2 show through SEEK_HOLE.
    fd = os.open(path, os.O_RDONLY)
    try:
        assert os.lseek(fd, 0, os.SEEK_HOLE) == 3 * MiB
        assert os.lseek(fd, 3 * MiB, os.SEEK_DATA) == 16 * MiB
    finally:
        os.close(fd)
    assert children_running(m.pid, str(img))
    assert m.unmount() == 0
    wait_for(lambda: not children_running(m.pid, str(img)), 10, "qemu-nbd to stop")


def test_captive_restarted_after_crash_and_stopped_on_removal(mount, catalog, qcow2):
    img, expect = qcow2
    conf = write_entry(catalog, "vm.img", f"command = qemu-nbd -f qcow2 {img}\n"
                       "timeout = 10\nretry-time = 30\n")
    write_entry(catalog, "mem.img", "command = nbdkit memory 4M\n")
    m = mount(catalog)
    path = m.path / "vm.img"
    assert sha256(path) == sha256(expect)
    pids = children_running(m.pid, str(img))
    assert len(pids) == 1
    os.kill(pids[0], signal.SIGKILL)
    m.wait_log(r"starting it again", timeout=10)
    # The client reconnects to the restarted server on the same socket.
    with open(path, "rb", buffering=0) as f:
        f.seek(16 * MiB)
        with open(expect, "rb") as e:
            e.seek(16 * MiB)
            assert f.read(MiB) == e.read(MiB)
    new = wait_for(lambda: children_running(m.pid, str(img)), 10, "a new qemu-nbd")
    assert new != pids

    # nbdkit is socket-activated as well, and writable.
    with open(m.path / "mem.img", "r+b", buffering=0) as f:
        f.seek(MiB)
        f.write(b"captive" * 100)
        os.fsync(f.fileno())
        f.seek(MiB)
        assert f.read(700) == b"captive" * 100

    # Removing the entry stops its server.
    conf.unlink()
    os.kill(m.pid, signal.SIGHUP)
    wait_for(lambda: not (m.path / "vm.img").exists(), 15, "the entry to go")
    wait_for(lambda: not children_running(m.pid, str(img)), 15, "qemu-nbd to be stopped")
    assert children_running(m.pid, "nbdkit memory")
    assert m.unmount() == 0
    wait_for(lambda: not children_running(m.pid, "nbdkit memory"), 10, "nbdkit to stop")


def test_missing_command_is_a_broken_entry(mount, catalog, tmp_path):
    write_entry(catalog, "gone.img", "command = no-such-nbd-server --flag\n")
    write_entry(catalog, "mem.img", "command = nbdkit memory 1M\n")
    t0 = time.monotonic()
    m = mount(catalog)
    assert time.monotonic() - t0 < 20
    assert "no-such-nbd-server: not found" in m.log()
    assert not (m.path / "gone.img").exists()
    assert os.stat(m.path / "mem.img").st_size == 1 << 20
    assert m.unmount() == 0
