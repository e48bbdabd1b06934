"""NBD faults: errors injected by nbdkit's error filter, a server killed
and restarted in the middle of a dd, and a hostile server (tests/
nbd_hostile.py) that breaks the protocol in many ways.  The daemon must
give EIO where the server failed, correct data everywhere else, and
never crash or hang."""

import errno
import os
import re
import subprocess
import threading
import time

import pytest

from nbd_helpers import NbdServer, direct_pread, hostile  # noqa: F401 (fixture)
from peers import make_random_file, scaled, sha256, wait_for, write_entry

MiB = 1 << 20


def test_error_filter_gives_eio_on_the_failing_reads(mount, catalog, tmp_path):
    image = make_random_file(tmp_path / "export.img", 8 * MiB, seed=5)
    data = image.read_bytes()
    trigger = tmp_path / "fail-now"
    srv = NbdServer("nbdkit", image, tmp_path / "srv", transport="unix",
                    extra_args=["--filter=error"]).start()
    # The error filter's parameters go after the plugin: restart with them.
    srv.stop()
    srv.extra_args = ["--filter=error"]
    srv._orig_argv = srv._nbdkit_argv
    srv._nbdkit_argv = lambda: srv._orig_argv() + [
        "error-pread=EIO", "error-pread-rate=1", f"error-pread-file={trigger}"]
    srv.start()
    try:
        write_entry(catalog, "disk.img", f"source = {srv.uri()}\ntimeout = 10\n")
        m = mount(catalog)
        path = m.path / "disk.img"
        assert direct_pread(path, 3 * MiB, 65536) == data[3 * MiB:3 * MiB + 65536]

        trigger.touch()
        for off in (1 * MiB, 5 * MiB + 4096):
            with pytest.raises(OSError) as e:
                direct_pread(path, off, 65536)
            assert e.value.errno == errno.EIO
        trigger.unlink()

        # Everything reads correctly once the server stops failing.
        for off in (0, 1 * MiB, 5 * MiB + 4096, 8 * MiB - 65536):
            assert direct_pread(path, off, 65536) == data[off:off + 65536]
        assert sha256(path) == sha256(image)
        # Each failed read is logged with its range and the server's error.
        log = m.log()
        for off in (1 * MiB, 5 * MiB + 4096):
            assert re.search(rf"disk\.img: read: nbd: .*: read at {off}\+65536: "
                             r"Input/output error", log), log
        assert m.unmount() == 0
    finally:
        srv.stop()


@pytest.mark.parametrize("tls", [None, "psk"], ids=["plain", "psk"])
def test_server_killed_and_restarted_during_dd(mount, catalog, tmp_path, tls):
    image = make_random_file(tmp_path / "export.img", 32 * MiB, seed=6)
    srv = NbdServer("nbdkit", image, tmp_path / "srv", transport="unix", tls=tls)
    srv._orig_argv = srv._nbdkit_argv
    # Slow reads down so that the kill lands in the middle of the copy.
    srv._nbdkit_argv = lambda: srv._orig_argv()[:-2] + [
        "--filter=delay", "file", str(image), "rdelay=20ms"]
    srv.start()
    try:
        write_entry(catalog, "disk.img",
                    f"source = {srv.uri()}\ntimeout = 10\nretry-time = 30\n")
        m = mount(catalog)
        out = tmp_path / "copy.img"
        dd = subprocess.Popen(["dd", f"if={m.path / 'disk.img'}", f"of={out}", "bs=1M",
                               "iflag=direct", "status=none"])
        try:
            wait_for(lambda: out.exists() and out.stat().st_size >= 4 * MiB, 30,
                     "dd to copy 4 MiB")
            srv.kill()
            time.sleep(1)
            assert dd.poll() is None, "dd finished before the server was restarted"
            srv.start()
            assert dd.wait(timeout=scaled(120)) == 0
        finally:
            if dd.poll() is None:
                dd.kill()
                dd.wait()
        assert sha256(out) == sha256(image)
        # The loss and the reconnect are on record, with the reason.
        status = m.status()
        reconnects = re.search(r"^nbd-reconnects: (\d+)$", status, re.M)
        assert reconnects and int(reconnects.group(1)) >= 1, status
        assert re.search(r"^nbd-last-loss: connection \d+: ", status, re.M), status
        assert m.unmount() == 0
    finally:
        srv.stop()


BROKEN = ["wrong-cookie", "oversized", "overlap", "bad-magic", "huge-error", "silent"]
REASONS = {
    "wrong-cookie": "reply with an unknown cookie",
    "oversized": "read chunk outside the requested range",
    "overlap": "overlapping read chunks",
    "bad-magic": "bad reply magic",
    "huge-error": "error message of 60000 bytes is longer than 4096",
    "silent": "no reply within the timeout",
}


def test_hostile_server(mount, catalog, hostile):
    """Every kind of broken reply gives EIO (not a crash, not a hang, not
    wrong bytes), and a well-behaved export in the same mount keeps
    working."""
    good = hostile("good")
    write_entry(catalog, "good.img", f"source = nbd+unix:///?socket={good}\n")
    for scenario in BROKEN:
        sock = hostile(scenario)
        write_entry(catalog, f"{scenario}.img",
                    f"source = nbd+unix:///?socket={sock}\ncompression = none\n"
                    "timeout = 2\nretry-time = 2\n")
    truncated = hostile("truncated")
    write_entry(catalog, "truncated.img",
                f"source = nbd+unix:///?socket={truncated}\ntimeout = 2\n")
    m = mount(catalog)

    want = bytes(i % 251 for i in range(65536))
    assert direct_pread(m.path / "good.img", 0, 65536) == want

    results = {}

    def read(scenario):
        t0 = time.monotonic()
        try:
            direct_pread(m.path / f"{scenario}.img", 0, 65536)
            results[scenario] = ("no error", time.monotonic() - t0)
        except OSError as e:
            results[scenario] = (e.errno, time.monotonic() - t0)

    threads = [threading.Thread(target=read, args=(s,)) for s in BROKEN]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=scaled(60))
    assert not any(t.is_alive() for t in threads), "a read hung"
    for scenario in BROKEN:
        err, took = results[scenario]
        assert err == errno.EIO, f"{scenario}: {err}"
        assert took < scaled(30), f"{scenario}: took {took:.1f}s"

    # Each failure is logged with the protocol error that caused it.
    log = m.log()
    for scenario, reason in REASONS.items():
        assert re.search(rf"{scenario}\.img: read: .*{reason}", log), (scenario, log)

    # The broken handshake leaves that entry out of the mount, with a reason.
    assert re.search(r"truncated\.img: left out of the mount: .*no greeting from the "
                     r"server \(connection closed\)", log), log
    assert not (m.path / "truncated.img").exists()

    # Still alive and still right.
    assert direct_pread(m.path / "good.img", 65536, 65536) == \
        bytes((65536 + i) % 251 for i in range(65536))
    assert m.proc.poll() is None
    assert m.unmount() == 0


def test_dead_server_gives_eio_after_retry_time_then_recovers(mount, catalog, tmp_path):
    image = make_random_file(tmp_path / "export.img", 4 * MiB, seed=8)
    data = image.read_bytes()
    srv = NbdServer("nbdkit", image, tmp_path / "srv", transport="unix").start()
    try:
        write_entry(catalog, "disk.img",
                    f"source = {srv.uri()}\ntimeout = 5\nretry-time = 2\n")
        write_entry(catalog, "other.img", f"source = {image}\n")
        m = mount(catalog)
        path = m.path / "disk.img"
        assert direct_pread(path, 0, 65536) == data[:65536]
        srv.kill()
        t0 = time.monotonic()
        with pytest.raises(OSError) as e:
            direct_pread(path, MiB, 65536)
        took = time.monotonic() - t0
        assert e.value.errno == errno.EIO
        assert took < scaled(15), f"took {took:.1f}s"
        # The mount is fine: other entries still read.
        assert direct_pread(m.path / "other.img", 0, 4096) == data[:4096]
        # A server that comes back is used again.
        srv.start()
        got = wait_for(lambda: _try_read(path, 2 * MiB, 65536), 20, "the export to come back")
        assert got == data[2 * MiB:2 * MiB + 65536]
        assert m.unmount() == 0
    finally:
        srv.stop()


def _try_read(path, offset, length):
    """direct_pread, or None on an I/O error."""
    try:
        return direct_pread(path, offset, length)
    except OSError:
        return None


def test_export_name_fallback_and_oldstyle_refused(mount, catalog, hostile, tmp_path):
    """A server without GO and structured replies is used through
    NBD_OPT_EXPORT_NAME and simple replies; an oldstyle server is refused
    with a message that says so."""
    nogo = hostile("no-go")
    write_entry(catalog, "nogo.img", f"source = nbd+unix:///?socket={nogo}\n")
    image = make_random_file(tmp_path / "old.img", MiB, seed=2)
    old = NbdServer("nbdkit", image, tmp_path / "old", transport="unix",
                    extra_args=["--oldstyle"]).start()
    write_entry(catalog, "old.img", f"source = {old.uri()}\n")
    try:
        m = mount(catalog)
        assert os.stat(m.path / "nogo.img").st_size == 1 << 20
        assert direct_pread(m.path / "nogo.img", 4096, 65536) == \
            bytes((4096 + i) % 251 for i in range(65536))
        assert not (m.path / "old.img").exists()
        assert "oldstyle" in m.log()
        assert m.unmount() == 0
    finally:
        old.stop()
