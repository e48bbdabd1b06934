"""The zero blocks of a mostly empty image, and read-ahead over them
(backends/xz/zerosig.c, ahead.c): blocks whose compressed bytes equal
those of a zero block already decoded and verified are not decoded
again; and a sequential reader gets the data blocks behind a run of zero
blocks decoded ahead of it, since zero blocks cost read-ahead nothing.
Seen through `diskshelf status` counters, not timing."""

import os
import random
import time

from peers import scaled, sha256, write_entry
from xz_helpers import blocks, xz

MIB = 1 << 20
SIZE = 64 * MIB
DATA_BLOCKS = (0, 40, 41)       # of 1 MiB each; every other block is zero


def sparse_xz(tmp_path):
    raw = tmp_path / "vm.img"
    rng = random.Random(40)
    with open(raw, "wb") as f:
        f.truncate(SIZE)
        for b in DATA_BLOCKS:
            f.seek(b * MIB)
            f.write(rng.randbytes(MIB))
    packed = xz(raw, tmp_path / "vm.img.xz", "-T2", "--block-size=1MiB")
    assert len(blocks(packed)) == SIZE // MIB
    return raw, packed


def status_fields(m):
    lines = m.status().splitlines()

    def line(prefix):
        return [x for x in lines if x.startswith(prefix)][0].split()
    cache = line("memory-cache:")
    return {"used": int(cache[1]), "decoded": int(cache[5]),
            "zeros": int(line("xz-zero-blocks:")[1]),
            "matched": int(line("xz-zero-blocks-matched:")[1])}


def test_zero_blocks_alike_are_decoded_once(mount, catalog, tmp_path):
    raw, packed = sparse_xz(tmp_path)
    write_entry(catalog, "vm.img", f"source = {packed}\n")
    m = mount(catalog, "--memory-cache-size=16M", "--cache-dir=none", "--workers=2")
    assert sha256(m.path / "vm.img") == sha256(raw)
    st = status_fields(m)
    zeros = SIZE // MIB - len(DATA_BLOCKS)
    assert st["zeros"] == zeros, st
    # Every zero block has the same bytes: at most one per worker is
    # decoded before the first is recorded, the others are recognised.
    assert zeros - 2 <= st["matched"] < zeros, st
    assert st["decoded"] == SIZE // MIB, st     # each block once
    # Reads of recognised blocks are zeroes, also at their edges.
    data = raw.read_bytes()
    fd = os.open(m.path / "vm.img", os.O_RDONLY)
    try:
        for off in (MIB - 10, 20 * MIB + 5, 40 * MIB - 7, 42 * MIB - 3):
            assert os.pread(fd, 8192, off) == data[off:off + 8192], off
    finally:
        os.close(fd)


def test_read_ahead_reaches_past_a_zero_run(mount, catalog, tmp_path):
    # The image's first 2 MiB read: read-ahead starts there, steps
    # over the 39 zero blocks as they are found zero (they cost nothing),
    # and decodes the two data blocks behind them, 40 MiB ahead of the
    # reader; then stops (the window is two blocks that cost a decode).
    raw, packed = sparse_xz(tmp_path)
    write_entry(catalog, "vm.img", f"source = {packed}\n")
    m = mount(catalog, "--memory-cache-size=16M", "--cache-dir=none", "--workers=2")
    fd = os.open(m.path / "vm.img", os.O_RDONLY)
    try:
        first = raw.read_bytes()[:2 * MIB]
        assert os.pread(fd, MIB, 0) == first[:MIB]
        assert os.pread(fd, MIB, MIB) == first[MIB:]    # sequential
        deadline = time.monotonic() + scaled(30)
        while status_fields(m)["decoded"] < 42 and time.monotonic() < deadline:
            time.sleep(0.05)
        st = status_fields(m)
        assert st["decoded"] == 42, st          # blocks 0..41, no further
        assert st["zeros"] == 39, st
        assert st["used"] >= 3 * MIB, st        # blocks 0, 40 and 41
        # The reader finds them decoded: reads there are hits.
        data = raw.read_bytes()
        assert os.pread(fd, 4096, 40 * MIB + 100) == data[40 * MIB + 100:40 * MIB + 4196]
        assert status_fields(m)["decoded"] == 42
    finally:
        os.close(fd)
    assert sha256(m.path / "vm.img") == sha256(raw)


def test_reads_are_answered_in_place(mount, catalog, tmp_path):
    # Reads inside one block are answered from the cached block, or from
    # zeroes for a hole, not from a copy (xz_borrow, block_cache_borrow);
    # reads across a block edge are copied.  Both give the right bytes.
    raw, packed = sparse_xz(tmp_path)
    write_entry(catalog, "vm.img", f"source = {packed}\n")
    m = mount(catalog, "--memory-cache-size=16M", "--cache-dir=none", "--workers=2")

    def in_place():
        line = [x for x in m.status().splitlines()
                if x.startswith("xz-reads-in-place:")][0]
        return int(line.split()[1])
    assert in_place() == 0
    assert sha256(m.path / "vm.img") == sha256(raw)
    whole = in_place()
    assert whole > 0
    data = raw.read_bytes()
    fd = os.open(m.path / "vm.img", os.O_RDONLY | os.O_DIRECT)
    try:
        # Across an edge between data blocks, and between a data block
        # and a zero block: copied, right.
        for off in (41 * MIB - 4096, MIB - 8192):
            assert os.pread(fd, 16384, off) == data[off:off + 16384], off
        assert in_place() == whole
        # Inside a data block and inside a zero block: in place, right.
        for off in (40 * MIB + 8192, 7 * MIB):
            assert os.pread(fd, 65536, off) == data[off:off + 65536], off
        assert in_place() == whole + 2
    finally:
        os.close(fd)
