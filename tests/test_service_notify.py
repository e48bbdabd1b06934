"""systemd's notify protocol, against a real datagram socket set as
NOTIFY_SOCKET: READY=1 only once the files read, STATUS with the counts,
RELOADING=1 (with MONOTONIC_USEC) around a SIGHUP reload, STOPPING=1 on
the way out."""

import os
import re
import signal
import subprocess

import pytest

from conftest import is_mounted
from peers import make_random_file, scaled, stop_process, wait_for, write_entry
from service_helpers import NotifyListener


def start(diskshelf, catalog, mnt, env, log, *extra):
    return subprocess.Popen([str(diskshelf), *extra, f"--cache-dir={mnt.parent / 'cache'}",
                             str(catalog), str(mnt)], env=env, stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.mark.parametrize("address", ["path", "abstract"])
def test_ready_reload_stopping(diskshelf, catalog, tmp_path, address):
    image = make_random_file(tmp_path / "disk.raw", 3 << 20)
    write_entry(catalog, "a.img", f"source = {image}\n")
    write_entry(catalog, "b.img", f"source = {image}\n")
    write_entry(catalog, "broken.img", "source = /nonexistent/disk.raw\n")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    sock = str(tmp_path / "notify.sock") if address == "path" else f"@diskshelf-test-{os.getpid()}"
    listener = NotifyListener(sock)
    env = dict(os.environ, NOTIFY_SOCKET=sock)
    log = open(tmp_path / "daemon.log", "wb")
    proc = start(diskshelf, catalog, mnt, env, log, "-f")
    try:
        ready = listener.wait_for("READY")
        assert ready["READY"] == "1"
        # The mount must serve reads the moment READY arrives.
        assert is_mounted(mnt)
        assert (mnt / "a.img").read_bytes() == image.read_bytes()
        assert ready["STATUS"] == "2 entries, 1 broken"
        assert ready["MAINPID"] == str(proc.pid)

        write_entry(catalog, "c.img", f"source = {image}\n")
        os.kill(proc.pid, signal.SIGHUP)
        reloading = listener.wait_for("RELOADING")
        assert reloading["RELOADING"] == "1"
        assert int(reloading["MONOTONIC_USEC"]) > 0
        again = listener.wait_for("READY")
        wait_for(lambda: (mnt / "c.img").exists(), 30, "c.img after the reload")
        assert re.fullmatch(r"\d+ entries, 1 broken", again["STATUS"])

        # EBUSY while the kernel still releases the file just read: retry.
        wait_for(lambda: subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True,
                                        timeout=scaled(30)).returncode == 0,
                 scaled(30), "the unmount to succeed")
        stopping = listener.wait_for("STOPPING")
        assert stopping["STOPPING"] == "1"
        assert proc.wait(timeout=scaled(30)) == 0
    finally:
        stop_process(proc)
        if is_mounted(mnt):
            subprocess.run(["fusermount3", "-uz", str(mnt)], timeout=scaled(30))
        log.close()
        listener.close()
    text = (tmp_path / "daemon.log").read_text()
    assert "Sanitizer" not in text, text


def test_ready_comes_after_mount_usable_in_background(diskshelf, catalog, tmp_path):
    """Without -f the child that serves the mount sends READY; by then the
    starting command has returned and the file reads."""
    image = make_random_file(tmp_path / "disk.raw", 1 << 20)
    write_entry(catalog, "a.img", f"source = {image}\n")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    sock = str(tmp_path / "notify.sock")
    listener = NotifyListener(sock)
    env = dict(os.environ, NOTIFY_SOCKET=sock)
    try:
        r = subprocess.run([str(diskshelf), f"--log-file={tmp_path / 'daemon.log'}",
                            f"--cache-dir={tmp_path / 'cache'}", str(catalog), str(mnt)],
                           env=env, capture_output=True, timeout=scaled(60))
        assert r.returncode == 0, r.stderr
        ready = listener.wait_for("READY")
        assert ready["STATUS"] == "1 entry, 0 broken"
        # The forked child names itself, for NotifyAccess=all units.
        status = (mnt / ".diskshelf-status").read_text()
        assert f"pid: {ready['MAINPID']}\n" in status
        assert (mnt / "a.img").read_bytes() == image.read_bytes()
    finally:
        if is_mounted(mnt):
            subprocess.run(["fusermount3", "-u", str(mnt)], timeout=scaled(30))
        listener.close()
    wait_for(lambda: "unmounted" in (tmp_path / "daemon.log").read_text(), 30,
             "the daemon to log its exit")
