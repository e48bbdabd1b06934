"""Damaged xz files: a flipped byte gives EIO on its block only, with a
log line naming the block; a truncated file is left out of the mount
with a clear error; the daemon and the other entries carry on."""

import errno
import os

import pytest

from peers import sha256, write_entry
from xz_helpers import blocks, make_image, xz

MIB = 1 << 20


@pytest.fixture
def original(tmp_path):
    return make_image(tmp_path / "orig.img", 12 * MIB, seed=4)


@pytest.mark.parametrize("check", ["crc32", "crc64", "sha256"])
def test_flipped_byte_fails_only_its_block(mount, catalog, original, tmp_path, check):
    packed = xz(original, tmp_path / "bad.img.xz", "--block-size=1MiB", f"--check={check}")
    table = blocks(packed)
    victim = table[5]
    raw = bytearray(packed.read_bytes())
    # A byte in the middle of the compressed data of block 5.
    raw[victim["coffset"] + victim["ctotal"] // 2] ^= 0x55
    packed.write_bytes(bytes(raw))
    good = xz(original, tmp_path / "good.img.xz", "--block-size=1MiB")
    write_entry(catalog, "bad.img", f"source = {packed}\n")
    write_entry(catalog, "good.img", f"source = {good}\n")
    m = mount(catalog)
    data = original.read_bytes()
    path = m.path / "bad.img"
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    import mmap
    buf = mmap.mmap(-1, 4096)
    try:
        for b in table:
            for off in (b["uoffset"], b["uoffset"] + b["usize"] - 4096):
                if b is victim:
                    with pytest.raises(OSError) as e:
                        os.preadv(fd, [buf], off)
                    assert e.value.errno == errno.EIO
                else:
                    assert os.preadv(fd, [buf], off) == 4096
                    assert bytes(buf) == data[off:off + 4096]
    finally:
        os.close(fd)
    log = m.log()
    assert "block 5 (image bytes %d-%d" % (victim["uoffset"], victim["uoffset"] + victim["usize"] - 1) in log
    assert "corrupt data or check mismatch" in log
    # Other entries and the daemon carry on.
    assert sha256(m.path / "good.img") == sha256(original)
    assert m.proc.poll() is None


def test_truncated_file_is_left_out_with_clear_error(mount, catalog, original, tmp_path):
    packed = xz(original, tmp_path / "cut.img.xz", "--block-size=1MiB")
    raw = packed.read_bytes()
    packed.write_bytes(raw[:len(raw) - 1000])
    short4 = tmp_path / "cut4.img.xz"
    short4.write_bytes(raw[:len(raw) // 2 // 4 * 4])
    good = xz(original, tmp_path / "good.img.xz", "--block-size=2MiB")
    write_entry(catalog, "cut.img", f"source = {packed}\n")
    write_entry(catalog, "cut4.img", f"source = {short4}\n")
    write_entry(catalog, "good.img", f"source = {good}\n")
    m = mount(catalog)
    assert sorted(p.name for p in m.path.iterdir()) == ["good.img"]
    log = m.log()
    assert "cut.img.xz: truncated" in log
    assert "cut4.img.xz: truncated" in log
    assert "broken: 2" in m.status()
    assert sha256(m.path / "good.img") == sha256(original)


def test_flipped_byte_in_single_block(mount, catalog, original, tmp_path):
    packed = xz(original, tmp_path / "one.img.xz")
    raw = bytearray(packed.read_bytes())
    raw[len(raw) * 3 // 4] ^= 0x01
    packed.write_bytes(bytes(raw))
    write_entry(catalog, "one.img", f"source = {packed}\n")
    m = mount(catalog, "--cache-dir=none", "--max-block-size=1M")
    with pytest.raises(OSError) as e:
        (m.path / "one.img").read_bytes()
    assert e.value.errno == errno.EIO
    assert "decoding failed" in m.log() or "decoded size differs" in m.log()
    assert "xz-decode: failed" in m.status()
    assert m.proc.poll() is None
