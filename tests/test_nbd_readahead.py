"""Read-ahead over NBD entries (backends/readahead.c): a sequential
reader is served from data fetched ahead of it (whole slots handed over
without a copy), a random reader is not read ahead for, a write lands between the reader and what was read ahead
and is still seen, and a failed fetch gives EIO rather than stale or
missing bytes."""

import errno
import mmap
import os
import re

import pytest

from nbd_helpers import NbdServer
from peers import make_random_file, sha256, wait_for, write_entry

MiB = 1 << 20


def status_counter(m, name):
    """One readahead-* counter from the entry's status."""
    found = re.search(rf"^{name}: (\d+)$", m.status(), re.M)
    assert found, m.status()
    return int(found.group(1))


def memory_mib(m):
    """MiB the entry's read-ahead holds, from its status."""
    found = re.search(r"^readahead-memory: (\d+) MiB$", m.status(), re.M)
    assert found, m.status()
    return int(found.group(1))


class DirectFile:
    """An O_DIRECT file in the mount, so every read and write reaches
    the daemon at exactly the offsets asked for."""

    def __init__(self, path, write=False):
        self.fd = os.open(path, (os.O_RDWR if write else os.O_RDONLY) | os.O_DIRECT)

    def pread(self, offset, length):
        buf = mmap.mmap(-1, length)
        try:
            n = os.preadv(self.fd, [buf], offset)
            return bytes(buf[:n])
        finally:
            buf.close()

    def pwrite(self, offset, data):
        buf = mmap.mmap(-1, len(data))
        try:
            buf.write(data)
            return os.pwritev(self.fd, [buf], offset)
        finally:
            buf.close()

    def close(self):
        os.close(self.fd)


@pytest.fixture
def export(tmp_path):
    """An nbdkit file export of 40 MiB of random bytes.  Tests list it
    before `mount` so the daemon is gone before nbdkit is stopped."""
    image = make_random_file(tmp_path / "export.img", 40 * MiB, seed=11)
    srv = NbdServer("nbdkit", image, tmp_path / "srv", transport="unix").start()
    yield srv
    srv.stop()


def test_sequential_reader_is_served_from_read_ahead(export, mount, catalog):
    write_entry(catalog, "disk.img", f"source = {export.uri()}\n")
    m = mount(catalog)
    assert "stack: readahead < nbd" in m.status()
    assert sha256(m.path / "disk.img") == sha256(export.image)
    # Nearly every read after the first two found its data read ahead.
    hits = status_counter(m, "readahead-hits")
    misses = status_counter(m, "readahead-misses")
    assert hits >= 20 and hits > 4 * misses, m.status()
    # Slots handed over to FUSE take their memory with them; what is
    # left stays within the bound (its release: the test below).
    assert memory_mib(m) <= 64


def test_whole_slots_are_handed_over_and_others_copied(export, mount, catalog):
    """1 MiB reads at 1 MiB boundaries (what the kernel's read-ahead
    sends) get the read-ahead slot's own buffer, no copy; reads across
    two slots are copied from them.  The bytes are right either way."""
    write_entry(catalog, "disk.img", f"source = {export.uri()}\n")
    m = mount(catalog)
    data = export.image.read_bytes()
    f = DirectFile(m.path / "disk.img")
    try:
        for off in range(0, 16 * MiB, MiB):
            assert f.pread(off, MiB) == data[off:off + MiB], f"bytes at {off}"
        taken = status_counter(m, "readahead-taken")
        assert taken >= 8, m.status()
        # Half a slot off: every read spans two slots and is copied.
        for off in range(16 * MiB + MiB // 2, 32 * MiB, MiB):
            assert f.pread(off, MiB) == data[off:off + MiB], f"bytes at {off}"
        assert status_counter(m, "readahead-taken") == taken, m.status()
    finally:
        f.close()
    # The copied slots' memory is given back once the reader has gone (5 s).
    assert 0 < memory_mib(m) <= 64
    wait_for(lambda: memory_mib(m) == 0, 30, "read-ahead memory to be freed")


def test_random_reader_is_not_read_ahead(export, mount, catalog):
    write_entry(catalog, "disk.img", f"source = {export.uri()}\n")
    m = mount(catalog)
    data = export.image.read_bytes()
    f = DirectFile(m.path / "disk.img")
    try:
        # Offsets far apart, never continuing each other.
        for i in range(64):
            off = ((i * 7919) % 9973) * 4096 % (len(data) - 4096)
            assert f.pread(off, 4096) == data[off:off + 4096]
    finally:
        f.close()
    assert status_counter(m, "readahead-fetched") == 0


def test_write_ahead_of_the_reader_is_seen(export, mount, catalog):
    write_entry(catalog, "disk.img", f"source = {export.uri()}\n")
    m = mount(catalog)
    data = bytearray(export.image.read_bytes())
    f = DirectFile(m.path / "disk.img", write=True)
    try:
        for off in range(0, 3 * MiB, MiB):
            assert f.pread(off, MiB) == data[off:off + MiB]
        # The window past 3 MiB is fetched in the background by now.
        wait_for(lambda: status_counter(m, "readahead-fetched") >= 4, 30,
                 "read-ahead to fetch")
        new = os.urandom(MiB)
        assert f.pwrite(6 * MiB, new) == MiB
        data[6 * MiB:7 * MiB] = new
        for off in range(3 * MiB, 12 * MiB, MiB):
            assert f.pread(off, MiB) == data[off:off + MiB], f"stale bytes at {off}"
    finally:
        f.close()
    assert export.image.read_bytes()[6 * MiB:7 * MiB] == new


def test_failed_read_ahead_gives_eio_then_recovers(mount, catalog, tmp_path):
    image = make_random_file(tmp_path / "export.img", 24 * MiB, seed=12)
    data = image.read_bytes()
    trigger = tmp_path / "fail-now"
    srv = NbdServer("nbdkit", image, tmp_path / "srv", transport="unix",
                    extra_args=["--filter=error"])
    orig_argv = srv._nbdkit_argv
    srv._nbdkit_argv = lambda: orig_argv() + [
        "error-pread=EIO", "error-pread-rate=1", f"error-pread-file={trigger}"]
    srv.start()
    try:
        write_entry(catalog, "disk.img", f"source = {srv.uri()}\ntimeout = 10\n")
        m = mount(catalog)
        f = DirectFile(m.path / "disk.img")
        try:
            assert f.pread(0, MiB) == data[:MiB]
            trigger.touch()
            # The stream's read-ahead fails; the reader must see EIO, not
            # zeroes or old buffer contents.
            with pytest.raises(OSError) as e:
                for off in range(MiB, 12 * MiB, MiB):
                    f.pread(off, MiB)
            assert e.value.errno == errno.EIO
            trigger.unlink()
            for off in range(MiB, 24 * MiB, MiB):
                assert f.pread(off, MiB) == data[off:off + MiB], f"bad bytes at {off}"
        finally:
            f.close()
        assert m.unmount() == 0
    finally:
        srv.stop()
