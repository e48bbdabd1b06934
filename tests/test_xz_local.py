"""xz images from local files: every shape of xz file (multi-block,
several streams, padding, every check type, a single block), read
through the mount and compared with the original bytes."""

import os
import random

import pytest

from peers import sha256, write_entry
from xz_helpers import blocks, make_image, xz

MIB = 1 << 20


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    return make_image(tmp_path_factory.mktemp("xzimg") / "orig.img", 24 * MIB)


def random_reads(path, data, count=150, seed=5):
    """Compare reads at random offsets (some across block edges) with data."""
    rng = random.Random(seed)
    fd = os.open(path, os.O_RDONLY)
    try:
        for _ in range(count):
            off = rng.randrange(len(data))
            n = rng.choice([1, 512, 4096, 65536, 300000, 2 * MIB + 17])
            assert os.pread(fd, n, off) == data[off:off + n], (off, n)
        assert os.pread(fd, 100, len(data)) == b""
    finally:
        os.close(fd)


@pytest.mark.parametrize("check", ["crc32", "crc64", "sha256", "none"])
def test_multi_block_every_check(mount, catalog, original, tmp_path, check):
    packed = xz(original, tmp_path / "x.img.xz", "--block-size=1MiB", f"--check={check}")
    assert len(blocks(packed)) == 24
    write_entry(catalog, "x.img", f"source = {packed}\n")
    m = mount(catalog)
    assert (m.path / "x.img").stat().st_size == original.stat().st_size
    assert sha256(m.path / "x.img") == sha256(original)
    random_reads(m.path / "x.img", original.read_bytes())
    status = m.status()
    assert "xz-blocks: 24" in status
    assert "xz-mode: multi-block" in status
    assert "stack: xz < file" in status


def test_threaded_xz_and_random_reads(mount, catalog, original, tmp_path):
    packed = xz(original, tmp_path / "t.img.xz", "-T2", "--block-size=3MiB")
    write_entry(catalog, "t.img", f"source = {packed}\n")
    m = mount(catalog)
    random_reads(m.path / "t.img", original.read_bytes(), count=300, seed=9)


def test_concatenated_streams_and_padding(mount, catalog, original, tmp_path):
    data = original.read_bytes()
    a = tmp_path / "a.img"
    b = tmp_path / "b.img"
    c = tmp_path / "c.img"
    a.write_bytes(data[:5 * MIB + 123])
    b.write_bytes(data[5 * MIB + 123:17 * MIB])
    c.write_bytes(data[17 * MIB:])
    parts = [xz(a, tmp_path / "a.xz", "--block-size=1MiB", "--check=crc32"),
             xz(b, tmp_path / "b.xz", "--block-size=2MiB", "--check=sha256"),
             xz(c, tmp_path / "c.xz", "--check=crc64")]
    packed = tmp_path / "cat.img.xz"
    with open(packed, "wb") as out:
        out.write(parts[0].read_bytes())
        out.write(bytes(8))                    # stream padding between streams
        out.write(parts[1].read_bytes())
        out.write(parts[2].read_bytes())
        out.write(bytes(4 * 1000))             # padding at the end
    write_entry(catalog, "cat.img", f"source = {packed}\n")
    m = mount(catalog)
    assert sha256(m.path / "cat.img") == sha256(original)
    random_reads(m.path / "cat.img", data, seed=11)
    status = m.status()
    assert "xz-streams: 3" in status
    assert "CRC32" in status and "CRC64" in status and "SHA-256" in status


def test_empty_image(mount, catalog, tmp_path):
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    packed = xz(empty, tmp_path / "empty.img.xz")
    write_entry(catalog, "empty.img", f"source = {packed}\n")
    m = mount(catalog)
    assert (m.path / "empty.img").stat().st_size == 0
    assert (m.path / "empty.img").read_bytes() == b""


def test_single_block_without_disk_cache(mount, catalog, original, tmp_path):
    packed = xz(original, tmp_path / "one.img.xz")   # plain xz: one block
    assert len(blocks(packed)) == 1
    write_entry(catalog, "one.img", f"source = {packed}\n")
    m = mount(catalog, "--cache-dir=none", "--max-block-size=4M")
    log = m.log()
    assert "larger than --max-block-size" in log
    assert "no --cache-dir" in log and "xz -T0 --block-size=16MiB" in log
    assert sha256(m.path / "one.img") == sha256(original)
    status = m.status()
    assert "xz-mode: single-block" in status
    assert "xz-decode-runs: 1" in status
    assert "decoded completely" in m.log()


def test_single_block_random_reads_without_disk_cache(mount, catalog, original, tmp_path):
    packed = xz(original, tmp_path / "one.img.xz")
    write_entry(catalog, "one.img", f"source = {packed}\n")
    m = mount(catalog, "--cache-dir=none", "--max-block-size=4M", "--memory-cache-size=8M")
    assert "with only 4 MiB kept in memory" in m.log()
    data = original.read_bytes()
    fd = os.open(m.path / "one.img", os.O_RDONLY | os.O_DIRECT)
    try:
        import mmap
        buf = mmap.mmap(-1, 65536)
        for off in (20 * MIB, 22 * MIB, 1 * MIB, 23 * MIB):
            assert os.preadv(fd, [buf], off) == 65536
            assert bytes(buf) == data[off:off + 65536], off
    finally:
        os.close(fd)
    assert "restarts decoding from the beginning" in m.log()


def test_compression_keys(mount, catalog, original, tmp_path):
    packed = xz(original, tmp_path / "k.xz", "--block-size=4MiB")
    write_entry(catalog, "raw.img", f"source = {packed}\ncompression = none\n")
    write_entry(catalog, "forced.img", f"source = {packed}\ncompression = xz\n")
    write_entry(catalog, "auto.img", f"source = {packed}\n")
    m = mount(catalog)
    assert (m.path / "raw.img").read_bytes() == packed.read_bytes()
    assert sha256(m.path / "forced.img") == sha256(original)
    assert sha256(m.path / "auto.img") == sha256(original)


def test_two_images_share_one_bounded_cache(mount, catalog, tmp_path):
    import threading
    one = make_image(tmp_path / "one.img", 20 * MIB, seed=2)
    two = make_image(tmp_path / "two.img", 20 * MIB, seed=3)
    write_entry(catalog, "one.img", f"source = {xz(one, tmp_path / 'one.xz', '--block-size=1MiB')}\n")
    write_entry(catalog, "two.img", f"source = {xz(two, tmp_path / 'two.xz', '--block-size=1MiB')}\n")
    m = mount(catalog, "--memory-cache-size=6M")
    errors = []

    def reader(name, original, seed):
        try:
            data = original.read_bytes()
            rng = random.Random(seed)
            fd = os.open(m.path / name, os.O_RDONLY)
            try:
                for _ in range(150):
                    off = rng.randrange(len(data))
                    n = rng.choice([4096, 100000, 1500000])
                    if os.pread(fd, n, off) != data[off:off + n]:
                        errors.append((name, off, n))
            finally:
                os.close(fd)
        except Exception as e:      # reported below
            errors.append((name, repr(e)))

    threads = [threading.Thread(target=reader, args=(n, o, s))
               for n, o, s in (("one.img", one, 1), ("two.img", two, 2),
                               ("one.img", one, 3), ("two.img", two, 4))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert sha256(m.path / "one.img") == sha256(one)
    line = [x for x in m.status().splitlines() if x.startswith("memory-cache:")][0]
    used, bound = int(line.split()[1]), int(line.split()[3])
    assert bound == 6 * MIB
    # Bounded: at most the bound plus the blocks busy right now (none).
    assert used <= bound
    assert "evictions" in line and " 0 evictions" not in line


@pytest.mark.parametrize("path", ["multi-block", "single-block"])
def test_writes_refused_with_erofs(mount, catalog, original, tmp_path, path):
    # An xz image is read-only even over a writable file: opening it for
    # writing and truncating it give EROFS, and the file is untouched.
    import errno
    packed = xz(original, tmp_path / "x.img.xz",
                *(["--block-size=1MiB"] if path == "multi-block" else []))
    before = sha256(packed)
    write_entry(catalog, "x.img", f"source = {packed}\n")
    m = mount(catalog, "--max-block-size=4M")
    f = m.path / "x.img"
    assert f"xz-mode: {path}" in m.status()
    assert "mode: read-only" in m.status()
    for flags in (os.O_WRONLY, os.O_RDWR, os.O_WRONLY | os.O_TRUNC, os.O_RDWR | os.O_APPEND):
        with pytest.raises(OSError) as e:
            os.close(os.open(f, flags))
        assert e.value.errno == errno.EROFS, flags
    with pytest.raises(OSError) as e:
        os.truncate(f, 4096)
    assert e.value.errno == errno.EROFS
    assert f.stat().st_size == original.stat().st_size
    assert sha256(f) == sha256(original)
    assert sha256(packed) == before
