"""The disk cache behind HTTP entries: a second daemon run reads from the
cache without fetching again, the cache stays under --cache-size, and a
tiny or full file system under the cache dir still gives correct data."""

import os
import re
import subprocess

import pytest

from http_helpers import data_gets, http_server, place_image  # noqa: F401
from peers import run, sha256, wait_for, write_entry

MiB = 1 << 20


def dir_bytes(path):
    """Disk usage of a directory in bytes (allocated blocks)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            total += os.stat(os.path.join(root, name)).st_blocks * 512
    return total


def read_ranges(path, ranges):
    with open(path, "rb", buffering=0) as f:
        out = []
        for off, n in ranges:
            f.seek(off)
            out.append(f.read(n))
        return out


def test_second_run_reads_from_cache(mount, catalog, http_server, tmp_path):
    image = place_image(http_server, "disk.img", 40 * MiB + 777)
    data = image.read_bytes()
    cache = tmp_path / "dc"
    write_entry(catalog, "c.img", f"source = {http_server.url('disk.img')}\n")
    ranges = [(0, 65536), (5 * MiB + 3, 200000), (40 * MiB, 777), (17 * MiB, 3 * MiB)]

    m = mount(catalog, f"--cache-dir={cache}")
    assert read_ranges(m.path / "c.img", ranges) == [data[o:o + n] for o, n in ranges]
    assert m.unmount() == 0
    before = len(http_server.requests())
    assert data_gets(http_server, "/disk.img")

    m2 = mount(catalog, f"--cache-dir={cache}")
    assert read_ranges(m2.path / "c.img", ranges) == [data[o:o + n] for o, n in ranges]
    new = http_server.requests()[before:]
    # No byte the first run read is fetched again.  (Read-ahead past the
    # last range may fetch: the first run's read-ahead there can still
    # have been in flight when it unmounted, which does not wait for it;
    # under load that happened once.)
    read = [(o, o + n) for o, n in ranges]
    refetched = [r for r in new if r["method"] == "GET" and r["bytes"] > 1
                 and any(_overlaps(r["range"], lo, hi) for lo, hi in read)]
    assert refetched == [], new
    assert "cache-present:" in m2.status()


def _overlaps(range_header, lo, hi):
    """True when an HTTP Range header "bytes=a-b" (or no range: the whole
    file) overlaps [lo, hi)."""
    found = re.match(r"bytes=(\d+)-(\d*)", range_header or "")
    if not found:
        return True
    first = int(found.group(1))
    last = int(found.group(2)) if found.group(2) else float("inf")
    return first < hi and last >= lo


def test_cache_stays_under_size(mount, catalog, http_server, tmp_path):
    a = place_image(http_server, "a.img", 48 * MiB, seed=1)
    b = place_image(http_server, "b.img", 24 * MiB, seed=2)
    cache = tmp_path / "dc"
    write_entry(catalog, "a.img", f"source = {http_server.url('a.img')}\n")
    write_entry(catalog, "b.img", f"source = {http_server.url('b.img')}\n")
    m = mount(catalog, f"--cache-dir={cache}", "--cache-size=16M")
    assert sha256(m.path / "a.img") == sha256(a)
    assert dir_bytes(cache) <= 16 * MiB
    assert sha256(m.path / "b.img") == sha256(b)
    assert dir_bytes(cache) <= 16 * MiB
    # The most recently read data is what the cache kept; the oldest went.
    before = len(http_server.requests())
    assert direct_read(m.path / "b.img", 23 * MiB) == b.read_bytes()[23 * MiB:23 * MiB + 4096]
    assert [r for r in http_server.requests()[before:] if r["method"] == "GET"] == []
    assert direct_read(m.path / "a.img", 0) == a.read_bytes()[:4096]
    assert [r for r in http_server.requests()[before:] if r["method"] == "GET"] != []
    assert m.unmount() == 0
    assert dir_bytes(cache) <= 16 * MiB
    m2 = mount(catalog, f"--cache-dir={cache}", "--cache-size=16M")
    assert sha256(m2.path / "a.img") == sha256(a)
    assert dir_bytes(cache) <= 16 * MiB


def direct_read(path, offset, n=4096):
    """Read with O_DIRECT, so the daemon (not the page cache) answers."""
    import mmap
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        buf = mmap.mmap(-1, n)
        got = os.preadv(fd, [buf], offset)
        return buf[:got]
    finally:
        os.close(fd)


@pytest.fixture
def tiny_fs(tmp_path):
    """A 3 MiB tmpfs mounted for the test and unmounted after it."""
    path = tmp_path / "tiny"
    path.mkdir()
    run(["mount", "-t", "tmpfs", "-o", "size=3m,mode=0700", "tmpfs", path])
    yield path
    subprocess.run(["umount", "-l", str(path)], timeout=30)


def test_tiny_filesystem_still_correct(mount, catalog, http_server, tiny_fs):
    image = place_image(http_server, "disk.img", 20 * MiB)
    write_entry(catalog, "t.img", f"source = {http_server.url('disk.img')}\n")
    m = mount(catalog, f"--cache-dir={tiny_fs / 'cache'}", "--cache-size=1G")
    assert sha256(m.path / "t.img") == sha256(image)
    m.wait_log(r"warning: cache: .*(No space left|cannot)")
    data = image.read_bytes()
    ranges = [(0, 4096), (7 * MiB + 5, 100000), (19 * MiB, MiB)]
    assert read_ranges(m.path / "t.img", ranges) == [data[o:o + n] for o, n in ranges]


def test_full_filesystem_still_correct(mount, catalog, http_server, tiny_fs):
    image = place_image(http_server, "disk.img", 8 * MiB)
    subprocess.run(["dd", "if=/dev/zero", f"of={tiny_fs / 'fill'}", "bs=64k"],
                   capture_output=True, timeout=30)
    write_entry(catalog, "t.img", f"source = {http_server.url('disk.img')}\n")
    m = mount(catalog, f"--cache-dir={tiny_fs / 'cache'}")
    assert sha256(m.path / "t.img") == sha256(image)
    m.wait_log(r"warning: cache: ")


def test_changed_object_drops_cache_on_next_run(mount, catalog, http_server, tmp_path):
    image = place_image(http_server, "disk.img", 8 * MiB, seed=1)
    cache = tmp_path / "dc"
    write_entry(catalog, "c.img", f"source = {http_server.url('disk.img')}\n")
    m = mount(catalog, f"--cache-dir={cache}")
    assert sha256(m.path / "c.img") == sha256(image)
    assert m.unmount() == 0
    # Replace it while no daemon runs: same size, new bytes, new mtime.
    st = image.stat()
    place_image(http_server, "disk.img", 8 * MiB, seed=5)
    os.utime(image, (st.st_mtime + 50, st.st_mtime + 50))
    m2 = mount(catalog, f"--cache-dir={cache}")
    assert sha256(m2.path / "c.img") == sha256(image)
    m2.wait_log(r"changed; dropping its cached data")


def test_killed_daemon_leaves_usable_cache(mount, catalog, http_server, tmp_path):
    """SIGKILL in the middle of cold reads, then a torn cache file: the
    next run detects what is invalid and still returns the right bytes."""
    import signal
    import threading

    image = place_image(http_server, "disk.img", 48 * MiB, seed=3)
    data = image.read_bytes()
    cache = tmp_path / "dc"
    write_entry(catalog, "k.img", f"source = {http_server.url('disk.img')}\n")
    m = mount(catalog, f"--cache-dir={cache}")
    m.expect_unclean = True

    def reader():
        try:
            with open(m.path / "k.img", "rb") as f:
                while f.read(MiB):
                    pass
        except OSError:
            pass

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    wait_for(lambda: any(r["method"] == "GET" for r in http_server.requests()), 20,
             "the first GET")
    os.kill(m.pid, signal.SIGKILL)
    m.stop()
    t.join(30)

    m2 = mount(catalog, f"--cache-dir={cache}")
    assert sha256(m2.path / "k.img") == sha256(image)
    assert m2.unmount() == 0

    # Tear the header of every cache file: each is dropped, data still right.
    for f in cache.glob("*.dsc"):
        with open(f, "r+b") as fh:
            fh.seek(50)
            fh.write(b"\xff\xff\xff\xff")
    before = len(data_gets(http_server, "/disk.img"))
    m3 = mount(catalog, f"--cache-dir={cache}")
    with open(m3.path / "k.img", "rb", buffering=0) as f:
        f.seek(10 * MiB)
        assert f.read(MiB) == data[10 * MiB:11 * MiB]
    m3.wait_log(r"invalid cache file \(torn or foreign\), dropped")
    assert len(data_gets(http_server, "/disk.img")) > before


def test_random_reader_fetches_small_ranges_and_fills_cache(mount, catalog, http_server,
                                                            tmp_path):
    """A random reader gets its own small ranges at once, while whole
    chunks fill the disk cache behind it; a second run needs no data."""
    import random
    import re

    image = place_image(http_server, "disk.img", 32 * MiB, seed=4)
    data = image.read_bytes()
    cache = tmp_path / "dc"
    write_entry(catalog, "r.img", f"source = {http_server.url('disk.img')}\n")
    rng = random.Random(11)
    offsets = [rng.randrange(0, 32 * MiB - 4096) & ~4095 for _ in range(60)]
    m = mount(catalog, f"--cache-dir={cache}")
    for off in offsets:
        assert direct_read(m.path / "r.img", off) == data[off:off + 4096], f"at {off}"
    small = [r for r in data_gets(http_server, "/disk.img") if r["bytes"] <= 131072]
    assert small, "random reads should fetch small ranges directly"
    chunks = {off // MiB for off in offsets}
    wait_for(lambda: "http-pending-chunks: 0\n" in m.status(), 60,
             "the background fill of every touched chunk")
    mt = re.search(r"cache-present: (\d+)", m.status())
    assert int(mt.group(1)) >= len(chunks) * MiB
    assert m.unmount() == 0
    before = len(data_gets(http_server, "/disk.img"))
    m2 = mount(catalog, f"--cache-dir={cache}")
    for off in offsets:
        assert direct_read(m2.path / "r.img", off) == data[off:off + 4096]
    again = data_gets(http_server, "/disk.img")[before:]
    assert again == [], (again, sorted(chunks))


def resident_bytes(path):
    """Bytes of path in the page cache, from util-linux fincore."""
    out = run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)])
    return int(out.stdout.split()[0])


def test_streamed_chunks_leave_the_page_cache(mount, catalog, http_server, tmp_path):
    """Chunks fetched ahead of a sequential reader are in the mount's
    page cache already: once durable (at the latest when the entry is
    closed), the data file's copy of them leaves the page cache.  A later
    run still reads them right, from the disk, with no fetch."""
    size = 48 * MiB + 5
    image = place_image(http_server, "big.img", size, seed=7)
    cache = tmp_path / "dc"
    write_entry(catalog, "big.img", f"source = {http_server.url('big.img')}\n")
    m = mount(catalog, f"--cache-dir={cache}")
    assert sha256(m.path / "big.img") == sha256(image)
    wait_for(lambda: f"cache-present: {size}" in m.status(), 30,
             "the whole image in the disk cache")
    assert m.unmount() == 0
    data_file = next(cache.rglob("*.dsd"))
    # The first chunks, fetched before the reader looked sequential, and
    # any a reader caught up with keep theirs.
    assert resident_bytes(data_file) <= size // 3, resident_bytes(data_file)

    before = len(http_server.requests())
    m2 = mount(catalog, f"--cache-dir={cache}")
    assert sha256(m2.path / "big.img") == sha256(image)
    assert [r for r in http_server.requests()[before:] if r["method"] == "GET"] == []


def test_random_reads_keep_their_pages(mount, catalog, http_server, tmp_path):
    """Chunks a random O_DIRECT reader (qemu with cache=none) asked for
    are not in any other page cache: the data file keeps its copy, so
    reading them again costs no disk read."""
    image = place_image(http_server, "rand.img", 64 * MiB, seed=8)
    data = image.read_bytes()
    cache = tmp_path / "dc"
    write_entry(catalog, "rand.img", f"source = {http_server.url('rand.img')}\n")
    m = mount(catalog, f"--cache-dir={cache}")
    # Fewer misses than make the engine call the reader random
    # (REMOTE_RANDOM_AFTER): each fetches its whole chunk in the
    # foreground, and the storer writes it before the unmount ends.
    offsets = [k * 9 * MiB + 4096 for k in range(6)]
    for off in offsets:
        assert direct_read(m.path / "rand.img", off) == data[off:off + 4096]
    assert m.unmount() == 0
    data_file = next(cache.rglob("*.dsd"))
    assert resident_bytes(data_file) >= 6 * MiB
