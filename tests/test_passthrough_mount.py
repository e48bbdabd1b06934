"""FUSE passthrough through the real mount (fs/hooks.c): a read-only
local raw entry and an HTTP entry whose disk-cache copy is complete are
opened with a backing file, so the kernel reads it and no READ reaches
the daemon (status: passthrough-opens, reads); a cold HTTP entry and an
xz entry are read through the daemon; an inode keeps one io mode while
opens of both kinds come and go; eviction never punches a lent object;
--passthrough=off turns it off."""

import mmap
import os
import subprocess

import pytest

from http_helpers import http_server, place_image  # noqa: F401
from peers import make_random_file, sha256, wait_for, write_entry

MiB = 1 << 20


def entry_status(m, name):
    """The "key: value" lines of one entry's status block, as a dict."""
    block = m.status().split(f"\n[{name}]\n", 1)[1].split("\n\n", 1)[0]
    out = {}
    for line in block.splitlines():
        key, _, value = line.partition(": ")
        out.setdefault(key, value)
    return out


def counters(m, name):
    s = entry_status(m, name)
    return int(s["passthrough-opens"]), int(s["reads"])


def passthrough_on(m):
    return "FUSE passthrough on" in m.log()


def wait_released(m, name):
    """The kernel sends RELEASE after close() returns: wait for it."""
    wait_for(lambda: entry_status(m, name)["passthrough"] == "no", 10,
             f"{name}'s passthrough opens to be released")


def read_http_entry_cold(mount, catalog, http_server, cache, name, seed):
    """Serve a 12 MiB + 333 byte image as HTTP entry `name`, mount over
    the disk cache `cache` (empty) and read it whole: the cache is not
    complete at open, so READs serve it.  Returns the mount, the served
    file and the entry's READ count."""
    remote = place_image(http_server, name, 12 * MiB + 333, seed=seed)
    write_entry(catalog, name, f"source = {http_server.url(name)}\n")
    m = mount(catalog, f"--cache-dir={cache}")
    assert passthrough_on(m), m.log()
    assert sha256(m.path / name) == sha256(remote)
    opens, reads = counters(m, name)
    assert opens == 0 and reads > 0
    return m, remote, reads


@pytest.fixture
def image(tmp_path):
    return make_random_file(tmp_path / "local.img", 8 * MiB + 4096 * 3 + 512, seed=7)


def test_local_raw_entry_passes_through(mount, catalog, image):
    write_entry(catalog, "ro.img", f"source = {image}\nreadonly = yes\n")
    m = mount(catalog)
    assert passthrough_on(m), m.log()
    assert sha256(m.path / "ro.img") == sha256(image)
    with open(m.path / "ro.img", "rb") as f:
        f.seek(5 * MiB + 3)
        assert f.read(70000) == image.read_bytes()[5 * MiB + 3:5 * MiB + 70003]
        assert entry_status(m, "ro.img")["passthrough"] == "yes"
    opens, reads = counters(m, "ro.img")
    assert opens >= 2
    assert reads == 0


def test_writable_local_entry_is_not_passed_through(mount, catalog, image):
    write_entry(catalog, "rw.img", f"source = {image}\n")
    m = mount(catalog)
    assert passthrough_on(m), m.log()
    assert sha256(m.path / "rw.img") == sha256(image)
    opens, reads = counters(m, "rw.img")
    assert opens == 0 and reads > 0


@pytest.mark.parametrize("option", [["--passthrough=off"], ["-o", "passthrough=off"]])
def test_passthrough_off_option(mount, catalog, image, option):
    write_entry(catalog, "ro.img", f"source = {image}\nreadonly = yes\n")
    m = mount(catalog, *option)
    assert not passthrough_on(m)
    assert sha256(m.path / "ro.img") == sha256(image)
    opens, reads = counters(m, "ro.img")
    assert opens == 0 and reads > 0


def test_xz_entry_is_not_passed_through(mount, catalog, image, tmp_path):
    packed = tmp_path / "x.img.xz"
    with open(packed, "wb") as out:
        subprocess.run(["xz", "-c", "-1", "--block-size=1MiB", str(image)],
                       stdout=out, check=True)
    write_entry(catalog, "x.img", f"source = {packed}\n")
    m = mount(catalog)
    assert sha256(m.path / "x.img") == sha256(image)
    opens, reads = counters(m, "x.img")
    assert opens == 0 and reads > 0


def test_http_cold_then_warm(mount, catalog, http_server, tmp_path):
    cache = tmp_path / "dc"
    m, remote, _ = read_http_entry_cold(mount, catalog, http_server, cache,
                                        "h.img", seed=3)
    assert m.unmount() == 0

    # Warm, a fresh mount: the complete copy is lent; no READ, no GET.
    m = mount(catalog, f"--cache-dir={cache}")
    before = len(http_server.requests())
    assert sha256(m.path / "h.img") == sha256(remote)
    with open(m.path / "h.img", "rb") as f:
        f.seek(7 * MiB + 11)
        assert f.read(100000) == remote.read_bytes()[7 * MiB + 11:7 * MiB + 100011]
    opens, reads = counters(m, "h.img")
    assert opens >= 2 and reads == 0
    assert [r for r in http_server.requests()[before:]
            if r["method"] == "GET" and r["bytes"] > 1] == []
    assert m.unmount() == 0


def test_one_io_mode_per_inode(mount, catalog, image):
    """An open served with READs (O_DIRECT) keeps later opens on READs;
    once it is released, an open passes through, and an O_DIRECT open
    then joins the passthrough inode (the kernel fails anything else)."""
    write_entry(catalog, "ro.img", f"source = {image}\nreadonly = yes\n")
    m = mount(catalog)
    data = image.read_bytes()
    fd = os.open(m.path / "ro.img", os.O_RDONLY | os.O_DIRECT)
    try:
        with open(m.path / "ro.img", "rb") as f:
            assert f.read() == data
        assert entry_status(m, "ro.img")["passthrough"] == "no"
        assert counters(m, "ro.img")[0] == 0
    finally:
        os.close(fd)
    # The O_DIRECT open's RELEASE is asynchronous: retry until the inode
    # has no cached open left and the next open passes through.
    def passes_through():
        with open(m.path / "ro.img", "rb") as f:
            f.read(4096)
            return entry_status(m, "ro.img")["passthrough"] == "yes"
    wait_for(passes_through, 10, "an open to pass through")
    wait_released(m, "ro.img")
    with open(m.path / "ro.img", "rb") as f:
        assert entry_status(m, "ro.img")["passthrough"] == "yes"
        # Joins with the same backing file; aligned O_DIRECT reads work.
        fd = os.open(m.path / "ro.img", os.O_RDONLY | os.O_DIRECT)
        try:
            buf = mmap.mmap(-1, MiB)
            n = os.preadv(fd, [buf], 2 * MiB)
            assert n == MiB and bytes(buf) == data[2 * MiB:3 * MiB]
        finally:
            os.close(fd)
        assert f.read() == data


def test_eviction_never_punches_a_lent_object(mount, catalog, http_server, tmp_path):
    a = place_image(http_server, "a.img", 8 * MiB, seed=4)
    b = place_image(http_server, "b.img", 24 * MiB, seed=5)
    cache = tmp_path / "dc"
    write_entry(catalog, "a.img", f"source = {http_server.url('a.img')}\n")
    write_entry(catalog, "b.img", f"source = {http_server.url('b.img')}\n")
    m = mount(catalog, f"--cache-dir={cache}", "--cache-size=16M")
    assert sha256(m.path / "a.img") == sha256(a)
    assert m.unmount() == 0

    m = mount(catalog, f"--cache-dir={cache}", "--cache-size=16M")
    data = a.read_bytes()
    with open(m.path / "a.img", "rb") as f:
        assert entry_status(m, "a.img")["passthrough"] == "yes"
        # b fills the cache past its bound: the oldest chunks, a's, would
        # go, but a is lent to the kernel.
        assert sha256(m.path / "b.img") == sha256(b)
        assert f.read() == data
        assert counters(m, "a.img")[1] == 0


def test_a_lent_object_that_changes_keeps_its_bytes(mount, catalog, http_server, tmp_path):
    """The server's copy changes while the kernel reads the complete
    cached copy itself: a new open fails (the object changed), and the
    open already lent goes on reading the bytes it was lent, never the
    zeros of a dropped cache."""
    old = place_image(http_server, "c.img", 8 * MiB, seed=8).read_bytes()
    cache = tmp_path / "dc"
    write_entry(catalog, "c.img",
                f"source = {http_server.url('c.img')}\nrevalidate = 0\n")
    m = mount(catalog, f"--cache-dir={cache}")
    assert sha256(m.path / "c.img") == sha256(http_server.root / "c.img")
    assert m.unmount() == 0

    m = mount(catalog, f"--cache-dir={cache}")
    with open(m.path / "c.img", "rb") as f:
        assert entry_status(m, "c.img")["passthrough"] == "yes"
        assert f.read(MiB) == old[:MiB]
        place_image(http_server, "c.img", 8 * MiB, seed=9)
        os.utime(http_server.root / "c.img", (1, 1))   # a new Last-Modified
        with pytest.raises(OSError):
            open(m.path / "c.img", "rb").close()
        assert "changed on the server" in m.log(), m.log()
        assert f.read() == old[MiB:]
        f.seek(0)
        assert f.read(4096) == old[:4096]
        assert counters(m, "c.img")[1] == 0


def test_single_block_xz_decoded_into_the_cache_passes_through(mount, catalog, image,
                                                               tmp_path):
    """A single-block xz image decoded completely into the disk cache is
    that cache file: opens after the decode (in the same mount, and after
    a restart) are lent it, and the kernel reads it without us."""
    packed = tmp_path / "one.img.xz"
    with open(packed, "wb") as out:
        subprocess.run(["xz", "-c", "-1", str(image)], stdout=out, check=True)
    cache = tmp_path / "dc"
    write_entry(catalog, "one.img", f"source = {packed}\n")
    small = "--memory-cache-size=8M"    # blocks over 4 MiB: the single-block path
    m = mount(catalog, f"--cache-dir={cache}", small)
    assert passthrough_on(m), m.log()
    data = image.read_bytes()
    with open(m.path / "one.img", "rb") as f:     # decodes, through READs
        assert f.read(MiB) == data[:MiB]
    opens, reads = counters(m, "one.img")
    assert opens == 0 and reads > 0
    wait_for(lambda: "xz-decode: complete in disk cache" in m.status(), 30,
             "the decoder to finish")
    wait_released(m, "one.img")
    assert sha256(m.path / "one.img") == sha256(image)
    assert counters(m, "one.img") == (1, reads)
    assert m.unmount() == 0

    m = mount(catalog, f"--cache-dir={cache}", small)
    with open(m.path / "one.img", "rb") as f:
        assert entry_status(m, "one.img")["passthrough"] == "yes"
        f.seek(3 * MiB + 5)
        assert f.read(200000) == data[3 * MiB + 5:3 * MiB + 200005]
    assert sha256(m.path / "one.img") == sha256(image)
    opens, reads = counters(m, "one.img")
    assert opens >= 2 and reads == 0


def read_http_entry_twice(mount, catalog, http_server, cache, name, seed):
    """read_http_entry_cold, then, once the disk cache holds the image
    whole, read it again in the same mount: it comes from the mount's
    page cache, with no passthrough open and no new READ.  Returns the
    mount, the served file and the entry's READ count."""
    m, remote, reads = read_http_entry_cold(mount, catalog, http_server, cache,
                                            name, seed)
    size = remote.stat().st_size
    wait_for(lambda: f"cache-present: {size}" in m.status(), 30,
             "the whole image in the disk cache")
    wait_released(m, name)
    assert sha256(m.path / name) == sha256(remote)
    assert counters(m, name) == (0, reads)
    return m, remote, reads


def test_an_image_read_whole_stays_in_the_mounts_page_cache(mount, catalog, http_server,
                                                            tmp_path):
    """Read whole through READs, an immutable image is in the mount's
    page cache (kept across opens): a later open in the same mount is
    not lent the now complete disk-cache copy (which the disk cache has
    dropped from memory), and reading it again reaches the daemon with
    no READ at all.  A fresh mount, whose page cache is empty, is lent
    the copy."""
    cache = tmp_path / "dc"
    m, remote, _ = read_http_entry_twice(mount, catalog, http_server, cache,
                                         "w.img", seed=6)
    assert m.unmount() == 0

    m = mount(catalog, f"--cache-dir={cache}")
    assert sha256(m.path / "w.img") == sha256(remote)
    assert counters(m, "w.img") == (1, 0)


def test_pages_the_kernel_dropped_bring_the_backing_file_back(mount, catalog, http_server,
                                                              tmp_path):
    """The daemon's idea that the mount's page cache holds an image read
    whole is an estimate.  When the kernel drops those pages (here
    fadvise DONTNEED on the mount's file; memory pressure does the same)
    and a later open reads part of it, the READs that reach the daemon
    show the pages are gone: the open after that is lent the disk-cache
    copy again, instead of staying on READs."""
    m, remote, reads = read_http_entry_twice(mount, catalog, http_server,
                                             tmp_path / "dc", "d.img", seed=8)

    fd = os.open(m.path / "d.img", os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    with open(m.path / "d.img", "rb") as f:
        assert f.read(MiB) == remote.read_bytes()[:MiB]
    opens, reads_after = counters(m, "d.img")
    assert opens == 0 and reads_after > reads
    wait_released(m, "d.img")

    assert sha256(m.path / "d.img") == sha256(remote)
    assert counters(m, "d.img") == (1, reads_after)
