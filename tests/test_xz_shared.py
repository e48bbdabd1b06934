"""Entries over one xz source share one set of decoded blocks (issue 11):
the decoded-block cache is keyed by the source's identity and
validators, not by the open entry, so the second entry's reads are cache
hits, each block is decoded once, and no compressed byte is fetched
twice."""

import threading
import time

import pytest

from peers import scaled, sha256, write_entry
from tar_helpers import tar_create
from xz_helpers import blocks, make_image, xz

MIB = 1 << 20


def cache_line(m):
    line = [x for x in m.status().splitlines() if x.startswith("memory-cache:")][0]
    return line.split()


def decoded_blocks(m):
    return int(cache_line(m)[5])


def settled_bytes(nginx, uri, m):
    """Bytes nginx sent for uri, once no HTTP layer of the mount has a
    fetch in flight and the count stops moving (the entries' opens fetch
    their probes and index, and read ahead, in the background)."""
    deadline = time.monotonic() + scaled(20)
    last = -1
    while time.monotonic() < deadline:
        pending = [x for x in m.status().splitlines()
                   if x.startswith("http-pending-chunks:") and x.split()[1] != "0"]
        sent = sum(r["bytes"] for r in nginx.requests()
                   if r["method"] == "GET" and r["uri"] == uri)
        if sent == last and not pending:
            return sent
        last = sent
        time.sleep(0.3)
    raise AssertionError("nginx kept sending")


@pytest.mark.parametrize("disk_cache", [True, False])
def test_two_entries_over_one_url_share_blocks(mount, catalog, nginx, tmp_path, disk_cache):
    original = make_image(tmp_path / "orig.img", 32 * MIB, seed=11)
    packed = xz(original, nginx.root / "disk.img.xz", "-T2", "--block-size=1MiB")
    nblocks = len(blocks(packed))
    url = nginx.url("disk.img.xz")
    write_entry(catalog, "a.img", f"source = {url}\n")
    write_entry(catalog, "b.img", f"source = {url}\n")
    args = ["--memory-cache-size=64M"] + ([] if disk_cache else ["--cache-dir=none"])
    m = mount(catalog, *args)
    # Each entry's HTTP layer fetches the xz magic and index when it
    # opens (one HTTP object per entry is the HTTP layer's business);
    # what is compared is what the reads fetch after that.
    opened = settled_bytes(nginx, "/disk.img.xz", m)
    want = sha256(original)
    assert sha256(m.path / "a.img") == want
    assert sha256(m.path / "b.img") == want
    # Each block decoded once for both entries.
    assert decoded_blocks(m) == nblocks
    # Every compressed byte fetched at most once by the reads.
    sent = settled_bytes(nginx, "/disk.img.xz", m) - opened
    assert sent <= packed.stat().st_size, (sent, packed.stat().st_size)


def test_concurrent_readers_of_two_entries(mount, catalog, tmp_path):
    # Two entries over one local file, read at once from both: right
    # bytes, one decode per block.
    original = make_image(tmp_path / "orig.img", 16 * MIB, seed=12)
    packed = xz(original, tmp_path / "disk.img.xz", "-T2", "--block-size=1MiB")
    nblocks = len(blocks(packed))
    write_entry(catalog, "a.img", f"source = {packed}\n")
    write_entry(catalog, "b.img", f"source = {packed}\n")
    m = mount(catalog, "--memory-cache-size=64M")
    results = {}

    def reader(name):
        results[name] = sha256(m.path / name)

    threads = [threading.Thread(target=reader, args=(n,)) for n in ("a.img", "b.img")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert results == {"a.img": sha256(original), "b.img": sha256(original)}
    assert decoded_blocks(m) == nblocks


def test_different_sources_do_not_share(mount, catalog, tmp_path):
    one = make_image(tmp_path / "one.img", 4 * MIB, seed=1)
    two = make_image(tmp_path / "two.img", 4 * MIB, seed=2)
    write_entry(catalog, "one.img", f"source = {xz(one, tmp_path / 'one.xz', '--block-size=1MiB')}\n")
    write_entry(catalog, "two.img", f"source = {xz(two, tmp_path / 'two.xz', '--block-size=1MiB')}\n")
    m = mount(catalog)
    assert sha256(m.path / "one.img") == sha256(one)
    assert sha256(m.path / "two.img") == sha256(two)
    assert decoded_blocks(m) == 8


def test_two_members_of_one_tar_xz_url(mount, catalog, nginx, tmp_path):
    # Two disks of one tar.xz: both entries' xz layers sit over the same
    # URL, so they share the decoded blocks and nothing is fetched twice.
    d = tmp_path / "members"
    d.mkdir()
    one = make_image(d / "disk1.img", 13 * MIB, seed=21)
    two = make_image(d / "disk2.img", 11 * MIB, seed=22)
    archive = tar_create(tmp_path / "disks.tar", d, ["disk1.img", "disk2.img"], "gnu")
    packed = xz(archive, nginx.root / "disks.tar.xz", "-T2", "--block-size=1MiB")
    url = nginx.url("disks.tar.xz")
    write_entry(catalog, "one.img", f"source = {url}\nentry = disk1.img\n")
    write_entry(catalog, "two.img", f"source = {url}\nentry = disk2.img\n")
    m = mount(catalog, "--memory-cache-size=64M", "--cache-dir=none")
    opened = settled_bytes(nginx, "/disks.tar.xz", m)
    assert sha256(m.path / "one.img") == sha256(one)
    assert sha256(m.path / "two.img") == sha256(two)
    # The block holding the end of one member and the start of the
    # other is decoded once.
    assert decoded_blocks(m) <= len(blocks(packed))
    sent = settled_bytes(nginx, "/disks.tar.xz", m) - opened
    assert sent <= packed.stat().st_size, (sent, packed.stat().st_size)


def test_golden_image_behind_two_overlays(mount, catalog, tmp_path):
    # One golden xz image behind two writable overlays: each overlay
    # keeps its own writes, the decoded blocks below are shared.
    original = make_image(tmp_path / "orig.img", 8 * MIB, seed=31)
    packed = xz(original, tmp_path / "golden.img.xz", "-T2", "--block-size=1MiB")
    write_entry(catalog, "vm1.img", f"source = {packed}\noverlay = discard\n")
    write_entry(catalog, "vm2.img", f"source = {packed}\noverlay = discard\n")
    m = mount(catalog, "--memory-cache-size=64M")
    with open(m.path / "vm1.img", "r+b") as f:
        f.write(b"only in vm1")
        assert sha256(m.path / "vm2.img") == sha256(original)
        f.seek(0)
        assert f.read() == b"only in vm1" + original.read_bytes()[11:]
    assert decoded_blocks(m) == len(blocks(packed))
