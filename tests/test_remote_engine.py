"""The remote-bytes engine (backends/remote/) under HTTP, against a real
nginx: its memory bound is process-wide (ten entries read at once stay
near --memory-cache-size plus a fixed overhead), and two entries over
one URL share one engine object (every byte fetched once, according to
nginx's access log)."""

import os
import subprocess

import pytest

from http_helpers import http_server, place_image  # noqa: F401
from peers import scaled, sha256, sha256_all_at_once, write_entry
from tar_helpers import tar_create, tar_member_sha256, write_random

MIB = 1 << 20
CACHE = 64 * MIB
ASAN = "asan" in os.environ.get("DISKSHELF_BIN", "")
# The daemon's baseline (libraries, FUSE buffers, thread stacks touched);
# sanitizer builds carry their shadow memory and allocator on top.
OVERHEAD = (160 if ASAN else 64) * MIB


@pytest.mark.parametrize("cache_dir", ["none", "disk"])
def test_ten_entries_read_at_once_stay_within_the_memory_bound(
        mount, catalog, http_server, tmp_path, monkeypatch, cache_dir):
    """Without a disk cache every fetched chunk stays in memory; with one
    they wait for the storer.  Either way the chunk buffers of all ten
    entries share one budget, so the peak RSS stays under
    --memory-cache-size + 64 MiB (before the engine, each entry kept up
    to 64 chunks and 40 spare buffers of its own: ~700 MiB here)."""
    if ASAN:
        # ASan keeps up to 256 MiB of freed memory in quarantine by default.
        monkeypatch.setenv("ASAN_OPTIONS", "quarantine_size_mb=8:"
                           + os.environ.get("ASAN_OPTIONS", ""))
    size = 40 * MIB
    images = []
    for i in range(10):
        images.append(place_image(http_server, f"d{i}.img", size, seed=100 + i))
        write_entry(catalog, f"d{i}.img", f"source = {http_server.url(f'd{i}.img')}\n")
    args = [f"--memory-cache-size={CACHE // MIB}M"]
    if cache_dir == "none":
        args.append("--cache-dir=none")
    m = mount(catalog, *args)
    sums, before, peak = sha256_all_at_once([m.path / f"d{i}.img" for i in range(10)], m.pid)
    print(f"peak RSS {peak / MIB:.1f} MiB (before reading {before / MIB:.1f} MiB), "
          f"bound {CACHE // MIB} MiB + {OVERHEAD // MIB} MiB")
    assert sums == [sha256(p) for p in images]
    assert peak <= CACHE + OVERHEAD, peak / MIB


def fetched_ranges(server, uri):
    """(first, last) byte of every range GET nginx answered for uri."""
    out = []
    for r in server.requests():
        if r["method"] == "GET" and r["uri"] == uri and r["range"].startswith("bytes="):
            a, b = r["range"][6:].split("-")
            out.append((int(a), int(b)))
    return out


@pytest.mark.parametrize("compressed", [False, True], ids=["tar", "tar.xz"])
@pytest.mark.parametrize("cache_dir", ["none", "disk"])
def test_two_members_of_one_tar_share_one_object(mount, catalog, http_server, tmp_path,
                                                 cache_dir, compressed):
    """Two entries over one tar (or tar.xz) URL, each showing another
    member: both read right, the status says the object is shared, and
    no byte of the archive was fetched twice (the size probes are HEADs,
    no GET range overlaps another)."""
    tree = tmp_path / "tree"
    write_random(tree / "a.bin", 9 * MIB + 123, seed=1)
    write_random(tree / "b.bin", 7 * MIB + 5, seed=2)
    tar = tar_create(tmp_path / "two.tar", tree, ["a.bin", "b.bin"], "gnu")
    served = tar
    if compressed:
        subprocess.run(["xz", "-0", "-T2", "--block-size=1MiB", "-k", str(tar)], check=True,
                       timeout=scaled(120))
        served = tmp_path / "two.tar.xz"
    (http_server.root / served.name).hardlink_to(served)
    url = http_server.url(served.name)
    write_entry(catalog, "a", f"source = {url}\nentry = a.bin\n")
    write_entry(catalog, "b", f"source = {url}\nentry = b.bin\n")
    args = ["--cache-dir=none"] if cache_dir == "none" else []
    m = mount(catalog, *args)
    assert sha256(m.path / "a") == tar_member_sha256(tar, "a.bin")
    assert sha256(m.path / "b") == tar_member_sha256(tar, "b.bin")
    ranges = sorted(fetched_ranges(http_server, "/" + served.name))
    assert ranges, "no range GET seen"
    for (a0, b0), (a1, b1) in zip(ranges, ranges[1:]):
        assert a1 > b0, f"bytes {a1}-{min(b0, b1)} fetched twice: {ranges}"
    st = m.status()
    assert st.count("http-shared-by: 2") == 2, st
