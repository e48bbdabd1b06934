"""HTTP faults with a real nginx: the server stopped in the middle of a
read and started again, injected 503 answers, and the image replaced on
the server while mounted (EIO and a log line, never mixed data)."""

import errno
import os
import threading
import time

import pytest

from http_helpers import data_gets, http_server, place_image  # noqa: F401
from peers import scaled, sha256, wait_for, write_entry

MiB = 1 << 20


class SlowReader(threading.Thread):
    """Reads a file sequentially in 1 MiB steps with a pause between them
    and hashes it; result is the sha256 or the exception raised."""

    def __init__(self, path, pause=0.02):
        super().__init__(daemon=True)
        self.path, self.pause, self.result, self.done = path, pause, None, 0

    def run(self):
        import hashlib
        h = hashlib.sha256()
        try:
            with open(self.path, "rb", buffering=0) as f:
                while True:
                    b = f.read(MiB)
                    if not b:
                        break
                    h.update(b)
                    self.done += len(b)
                    time.sleep(self.pause)
            self.result = h.hexdigest()
        except OSError as e:
            self.result = e


def test_server_stopped_mid_read_then_restarted(mount, catalog, http_server):
    image = place_image(http_server, "disk.img", 96 * MiB)
    write_entry(catalog, "d.img", f"source = {http_server.url('disk.img')}\n"
                "retry-time = 120\ntimeout = 5\n")
    m = mount(catalog, "--cache-dir=none")
    reader = SlowReader(m.path / "d.img")
    reader.start()
    wait_for(lambda: reader.done >= 4 * MiB, 20, "the read to start")
    http_server.stop()
    time.sleep(2 * scaled(1))
    # The read cannot have finished: most of the image is not fetched yet.
    assert reader.is_alive() and reader.done < 96 * MiB
    http_server.start()
    reader.join(scaled(90))
    assert not reader.is_alive()
    assert reader.result == sha256(image)
    m.wait_log(r"d\.img.*retrying")


def test_injected_503_retried(mount, catalog, http_server):
    image = place_image(http_server, "disk.img", 16 * MiB)
    write_entry(catalog, "f.img", f"source = {http_server.url('flaky/disk.img')}\n"
                "retry-time = 60\n")
    m = mount(catalog, "--cache-dir=none")
    http_server.flag.write_text("on\n")
    reader = SlowReader(m.path / "f.img", pause=0)
    reader.start()
    wait_for(lambda: any(r["status"] == 503 for r in http_server.requests()), 20,
             "nginx to answer 503")
    time.sleep(1)
    assert reader.is_alive()
    http_server.flag.unlink()
    reader.join(scaled(60))
    assert not reader.is_alive()
    assert reader.result == sha256(image)
    statuses = [r["status"] for r in http_server.requests() if r["uri"] == "/flaky/disk.img"
                and r["method"] == "GET"]
    assert 503 in statuses and 206 in statuses
    m.wait_log(r"f\.img.*HTTP 503; retrying")
    assert "http-retries: 0" not in m.status()


def test_replaced_on_server_gives_eio(mount, catalog, http_server):
    image = place_image(http_server, "disk.img", 64 * MiB, seed=1)
    old = image.read_bytes()
    write_entry(catalog, "v.img", f"source = {http_server.url('disk.img')}\n")
    m = mount(catalog)
    with open(m.path / "v.img", "rb", buffering=0) as f:
        assert f.read(4096) == old[:4096]
    # Replace the file: other bytes, same size, a different mtime.
    fresh = image.parent / "disk.img.new"
    place_image(http_server, "disk.img.new", 64 * MiB, seed=2)
    st = image.stat()
    os.utime(fresh, (st.st_mtime + 100, st.st_mtime + 100))
    os.replace(fresh, image)
    new = image.read_bytes()
    with open(m.path / "v.img", "rb", buffering=0) as f:
        f.seek(48 * MiB)
        with pytest.raises(OSError) as e:
            f.read(MiB)
        assert e.value.errno == errno.EIO
        # Every later read either fails or gives the old bytes, never the new.
        for off in (0, 3 * MiB, 20 * MiB, 63 * MiB):
            f.seek(off)
            try:
                got = f.read(4096)
            except OSError as err:
                assert err.errno == errno.EIO
                continue
            assert got == old[off:off + 4096] and got != new[off:off + 4096]
    m.wait_log(r"v\.img.*changed on the server")
    assert "changed on the server" in m.status()


def test_dead_server_gives_eio_after_retry_time(mount, catalog, http_server):
    image = place_image(http_server, "disk.img", 16 * MiB)
    write_entry(catalog, "t.img", f"source = {http_server.url('disk.img')}\n"
                "retry-time = 2\ntimeout = 1\n")
    m = mount(catalog, "--cache-dir=none")
    http_server.stop()
    start = time.monotonic()
    with open(m.path / "t.img", "rb", buffering=0) as f:
        f.seek(9 * MiB)
        with pytest.raises(OSError) as e:
            f.read(4096)
    assert e.value.errno == errno.EIO
    assert time.monotonic() - start < scaled(15)
    m.wait_log(r"t\.img.*giving up after")
    # The server is back: the entry works again, no remount needed.
    http_server.start()
    with open(m.path / "t.img", "rb", buffering=0) as f:
        f.seek(9 * MiB)
        assert f.read(4096) == image.read_bytes()[9 * MiB:9 * MiB + 4096]
