"""Blocks of an xz image that decode to zeroes are kept as holes: the
image still reads right, they cost the decoded-block cache no memory,
SEEK_DATA/SEEK_HOLE report them, and `cp --sparse=always` of the entry
gives a sparse file."""

import os
import random
import subprocess

from peers import scaled, sha256, write_entry
from xz_helpers import blocks, xz

MIB = 1 << 20
SIZE = 64 * MIB
# Data runs (offset, length) in an image of 1 MiB blocks; everything
# else is zero.  Block 20 has its data past the first 256 KiB piece the
# decoder checks, block 29 only in its last 8 bytes.
DATA = [(0, MIB), (20 * MIB + 600000, 5000), (30 * MIB - 8, 8),
        (40 * MIB, 2 * MIB)]


def make_sparse_image(path):
    rng = random.Random(14)
    with open(path, "wb") as f:
        f.truncate(SIZE)
        for off, n in DATA:
            f.seek(off)
            f.write(bytes(1 + rng.randrange(255) for _ in range(n))
                    if n < 10000 else rng.randbytes(n))
    return path


def mounted_image(mount, catalog, tmp_path):
    raw = make_sparse_image(tmp_path / "sparse.img")
    packed = xz(raw, tmp_path / "sparse.img.xz", "-T2", "--block-size=1MiB")
    assert len(blocks(packed)) == 64
    write_entry(catalog, "sparse.img", f"source = {packed}\n")
    m = mount(catalog, "--memory-cache-size=16M", "--cache-dir=none")
    return m, raw


def status_numbers(m):
    lines = m.status().splitlines()
    cache = [x for x in lines if x.startswith("memory-cache:")][0].split()
    zeros = [x for x in lines if x.startswith("xz-zero-blocks:")][0].split()
    return int(cache[1]), int(zeros[1])


def test_seek_data_and_hole_on_a_fresh_mount(mount, catalog, tmp_path):
    # Asked before anything was read: the layer decodes what it must to
    # answer, and the answers match the data runs to the block.
    m, _ = mounted_image(mount, catalog, tmp_path)
    fd = os.open(m.path / "sparse.img", os.O_RDONLY)
    try:
        want = [(os.SEEK_DATA, 0, 0), (os.SEEK_HOLE, 0, MIB),
                (os.SEEK_DATA, MIB, 20 * MIB), (os.SEEK_HOLE, 20 * MIB, 21 * MIB),
                (os.SEEK_DATA, 21 * MIB, 29 * MIB), (os.SEEK_HOLE, 29 * MIB + 5, 30 * MIB),
                (os.SEEK_DATA, 30 * MIB, 40 * MIB), (os.SEEK_HOLE, 40 * MIB, 42 * MIB),
                (os.SEEK_HOLE, 50 * MIB, 50 * MIB), (os.SEEK_DATA, 20 * MIB + 7, 20 * MIB + 7)]
        for whence, off, expect in want:
            assert os.lseek(fd, off, whence) == expect, (whence, off)
        try:
            os.lseek(fd, 42 * MIB, os.SEEK_DATA)
            raise AssertionError("SEEK_DATA past the last data found data")
        except OSError as e:
            assert e.errno == 6     # ENXIO
    finally:
        os.close(fd)
    used, zeros = status_numbers(m)
    assert zeros == 64 - 5
    # The five data blocks at most, and no memory for the holes.
    assert used <= 5 * MIB + 64 * 1024


def test_reads_right_and_holes_cost_no_memory(mount, catalog, tmp_path):
    m, raw = mounted_image(mount, catalog, tmp_path)
    assert sha256(m.path / "sparse.img") == sha256(raw)
    data = raw.read_bytes()
    fd = os.open(m.path / "sparse.img", os.O_RDONLY)
    try:
        # Reads across hole/data edges, after the holes are known.
        for off, n in DATA:
            for start in (off - 4096, off - 1, off + n - 3):
                start = max(0, start)
                assert os.pread(fd, 8192, start) == data[start:start + 8192]
    finally:
        os.close(fd)
    used, zeros = status_numbers(m)
    assert zeros == 64 - 5
    assert used <= 5 * MIB + 64 * 1024


def test_cp_sparse_gives_a_sparse_file(mount, catalog, tmp_path):
    m, raw = mounted_image(mount, catalog, tmp_path)
    out = tmp_path / "copy.img"
    subprocess.run(["cp", "--sparse=always", str(m.path / "sparse.img"), str(out)],
                   check=True, timeout=scaled(60))
    assert sha256(out) == sha256(raw)
    st = os.stat(out)
    assert st.st_size == SIZE
    assert st.st_blocks * 512 < SIZE // 8
