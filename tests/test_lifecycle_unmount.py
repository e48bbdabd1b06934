"""Unmounting while reads are blocked on a silent NBD server (nbdkit with
the delay filter): a plain unmount with no file open ends the daemon at
once, and after a lazy unmount the blocked reads fail within seconds, not
after the entry's timeout, and the daemon exits cleanly."""

import os
import re
import signal
import subprocess
import sys

import pytest

from conftest import is_mounted
from nbd_helpers import unix_ready
from peers import make_random_file, scaled, start_process, stop_process, wait_for, write_entry

TIMEOUT = 300       # the entry's timeout: nothing here may wait for it
WITHIN = 30         # what "within seconds" gets on a loaded machine

READER = """
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
try:
    os.pread(fd, 4096, 1 << 20)
    print("read", flush=True)
except OSError as e:
    print("errno", e.errno, flush=True)
"""


@pytest.fixture
def silent_nbd(tmp_path):
    """An NBD server that completes the handshake and then delays every
    read for longer than any test runs."""
    image = make_random_file(tmp_path / "slow.img", 4 << 20)
    sock = tmp_path / "slow.sock"
    proc = start_process(["nbdkit", "-f", "-U", sock, "--filter=delay", "file", image,
                          f"rdelay={TIMEOUT * 2}"], log_path=tmp_path / "nbdkit.log")
    try:
        wait_for(lambda: unix_ready(sock) or proc.poll() is not None, 20, "nbdkit to listen")
        assert proc.poll() is None, (tmp_path / "nbdkit.log").read_text()
        yield f"nbd+unix:///?socket={sock}"
    finally:
        stop_process(proc)


def nbd_requests(m):
    found = re.search(r"^nbd-requests: (\d+)$", m.status(), re.M)
    return int(found.group(1)) if found else 0


@pytest.fixture
def blocked_reader():
    """Factory: blocked_reader(m) -> a process whose read of slow.img
    waits on the silent server.  Every reader is killed by PID at
    teardown, so a failing test leaves no reader holding the mount open
    (and the daemon alive)."""
    readers = []

    def start(m):
        before = nbd_requests(m)
        reader = subprocess.Popen([sys.executable, "-c", READER, str(m.path / "slow.img")],
                                  stdout=subprocess.PIPE, text=True, start_new_session=True)
        readers.append(reader)
        wait_for(lambda: nbd_requests(m) > before, 30, "the read to reach the server")
        assert reader.poll() is None, "the read did not block"
        return reader

    yield start
    for reader in readers:
        stop_process(reader, timeout=5, sig=signal.SIGKILL)
        if reader.stdout is not None:
            reader.stdout.close()


def mount_silent(mount, catalog, uri):
    write_entry(catalog, "slow.img", f"source = {uri}\ncompression = none\n"
                f"timeout = {TIMEOUT}\nretry-time = {TIMEOUT}\n")
    return mount(catalog, "--cache-dir=none")


def test_lazy_unmount_fails_blocked_reads_and_exits(mount, catalog, silent_nbd, blocked_reader):
    m = mount_silent(mount, catalog, silent_nbd)
    reader = blocked_reader(m)
    subprocess.run(["fusermount3", "-uz", m.path], check=True, timeout=scaled(30))
    assert not is_mounted(m.path)
    out, _ = reader.communicate(timeout=scaled(WITHIN))
    assert out.strip() == f"errno {5}", out          # EIO, well before the timeout
    m.proc.wait(timeout=scaled(WITHIN))
    assert m.proc.returncode == 0, m.log()
    assert "no longer mounted" in m.log()
    assert "unmounted" in m.log()


def test_unmount_with_no_file_open_ends_at_once(mount, catalog, silent_nbd, blocked_reader):
    """The reader is killed (its file closes) while the daemon's worker
    still waits on the server: the unmount and the daemon's exit do not
    wait for the entry's timeout."""
    m = mount_silent(mount, catalog, silent_nbd)
    reader = blocked_reader(m)
    os.kill(reader.pid, signal.SIGKILL)
    reader.wait(timeout=scaled(WITHIN))
    r = subprocess.run(["fusermount3", "-u", m.path], capture_output=True, text=True,
                       timeout=scaled(WITHIN))
    if r.returncode != 0:
        # The kernel may still count the killed reader's file for a moment.
        wait_for(lambda: subprocess.run(["fusermount3", "-u", m.path],
                                        capture_output=True).returncode == 0,
                 WITHIN, "the unmount")
    m.proc.wait(timeout=scaled(WITHIN))
    assert m.proc.returncode == 0, m.log()


def test_last_close_after_a_lazy_unmount_is_a_clean_exit(mount, catalog, tmp_path):
    """Files stay open across a lazy unmount and close just after it, as
    when `umount -l` comes while qemu runs: the last close sends RELEASE
    as the kernel ends the connection, and a worker taking that request
    then reads ECONNABORTED from /dev/fuse, not ENODEV.  That is the
    unmount too, and the daemon exits 0 every time.  (It exited 1 about
    one cycle in 16 while it took ECONNABORTED for a failure; the
    cycles make that certain to show.)"""
    image = make_random_file(tmp_path / "a.raw", 1 << 20)
    write_entry(catalog, "a.img", f"source = {image}\n")
    for cycle in range(150):
        m = mount(catalog, "--cache-dir=none", name=f"mnt{cycle}")
        fds = [os.open(m.path / "a.img", os.O_RDONLY) for _ in range(8)]
        try:
            for k, fd in enumerate(fds):
                assert os.pread(fd, 4096, k * 4096)
            subprocess.run(["fusermount3", "-uz", m.path], check=True, timeout=scaled(30))
        finally:
            for fd in fds:
                os.close(fd)
        code = m.proc.wait(timeout=scaled(WITHIN))
        assert code == 0, f"cycle {cycle}: exit code {code}:\n{m.log()}"
