"""Partial re-decoding (backends/xz/partial.c): once a block has been
decoded whole and its check verified, a random reader that comes back to
it after it left the cache gets it decoded only up to the end of the
read, checked against digests of the verified output.  The bytes must
be right, and compressed data that changed since the verification must
give EIO, never different bytes."""

import errno
import mmap
import os
import re

import pytest

from peers import write_entry
from xz_helpers import blocks, make_image, xz

MIB = 1 << 20


def partial_decodes(m):
    found = re.search(r"^xz-partial-decodes: (\d+)$", m.status(), re.M)
    assert found, m.status()
    return int(found.group(1))


class Direct:
    """O_DIRECT reads, so every read reaches the daemon."""

    def __init__(self, path):
        self.fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        self.buf = mmap.mmap(-1, 65536)

    def pread(self, offset, count):
        n = os.preadv(self.fd, [memoryview(self.buf)[:count]], offset)
        return bytes(self.buf[:n])

    def close(self):
        self.buf.close()
        os.close(self.fd)


@pytest.fixture
def packed(tmp_path):
    """48 MiB in twelve 4 MiB blocks (four 1 MiB segments each)."""
    original = make_image(tmp_path / "orig.img", 48 * MIB, seed=21)
    return original, xz(original, tmp_path / "img.xz", "--block-size=4MiB")


# Blocks visited in an order whose jumps are never small enough to look
# sequential, so each read takes the random path.
ORDER = [0, 6, 1, 9, 3, 11, 5, 0, 8, 2, 10, 4, 7, 1, 9, 3, 11, 6, 0, 8]


def test_random_rereads_decode_in_part_and_read_right(mount, catalog, packed):
    original, image = packed
    data = original.read_bytes()
    write_entry(catalog, "disk.img", f"source = {image}\n")
    # Room for two blocks: most blocks are evicted before they come back.
    m = mount(catalog, "--memory-cache-size=8M")
    f = Direct(m.path / "disk.img")
    try:
        for rnd in range(3):
            for i, blk in enumerate(ORDER):
                seg = (i + rnd) % 4
                off = blk * 4 * MIB + seg * MIB + 4096 * (7 + i)
                assert f.pread(off, 16384) == data[off:off + 16384], (blk, seg)
        # A read across a segment boundary inside a block.
        off = 6 * 4 * MIB + 2 * MIB - 8192
        assert f.pread(off, 16384) == data[off:off + 16384]
    finally:
        f.close()
    assert partial_decodes(m) >= 10, m.status()


def test_compressed_bytes_changed_after_verification_give_eio(mount, catalog, packed):
    original, image = packed
    data = original.read_bytes()
    table = blocks(image)
    write_entry(catalog, "disk.img", f"source = {image}\n")
    m = mount(catalog, "--memory-cache-size=8M")
    f = Direct(m.path / "disk.img")
    try:
        # Block 2 decoded whole (check verified), then pushed out.
        off = 2 * 4 * MIB + 3 * MIB
        assert f.pread(off, 4096) == data[off:off + 4096]
        for blk in (8, 5, 10, 0):
            o = blk * 4 * MIB + 4096
            assert f.pread(o, 4096) == data[o:o + 4096]
        # Change a byte early in block 2's compressed data, in place.
        victim = table[2]
        with open(image, "r+b") as raw:
            raw.seek(victim["coffset"] + 200)
            byte = raw.read(1)
            raw.seek(victim["coffset"] + 200)
            raw.write(bytes([byte[0] ^ 0x10]))
        with pytest.raises(OSError) as e:
            f.pread(off, 4096)
        assert e.value.errno == errno.EIO
        # Other blocks are unaffected.
        o = 9 * 4 * MIB + 2 * MIB
        assert f.pread(o, 4096) == data[o:o + 4096]
    finally:
        f.close()
    assert re.search(r"block 2 .*(decodes differently|corrupt)", m.log()), m.log()
