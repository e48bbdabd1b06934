"""Local images through the mount: reads, writes, read-only entries, holes,
fallocate, directories, statfs and a 4 GiB sparse copy."""

import errno
import os
import random
import stat
import subprocess

import pytest

from peers import make_random_file, sha256, wait_for, write_entry


@pytest.fixture
def image(tmp_path):
    return make_random_file(tmp_path / "disk.img", 8 << 20)


def test_checksum_matches_source(mount, catalog, image):
    write_entry(catalog, "x.img", f"source = {image}\n")
    m = mount(catalog)
    assert sha256(m.path / "x.img") == sha256(image)
    st = os.stat(m.path / "x.img")
    assert st.st_size == image.stat().st_size
    assert stat.S_IMODE(st.st_mode) == 0o644


def test_random_offset_reads(mount, catalog, image):
    write_entry(catalog, "x.img", f"source = {image}\n")
    m = mount(catalog)
    data = image.read_bytes()
    rng = random.Random(7)
    with open(m.path / "x.img", "rb", buffering=0) as f:
        for _ in range(200):
            off = rng.randrange(0, len(data))
            n = rng.choice([1, 511, 4096, 65536, 200000])
            f.seek(off)
            assert f.read(n) == data[off:off + n]
        f.seek(len(data))
        assert f.read(10) == b""


def test_dd_notrunc_write_reaches_source(mount, catalog, image):
    write_entry(catalog, "x.img", f"source = {image}\n")
    m = mount(catalog)
    payload = os.urandom(12288)
    patch = image.parent / "patch"
    patch.write_bytes(payload)
    subprocess.run(["dd", f"if={patch}", f"of={m.path / 'x.img'}", "bs=4096", "seek=100",
                    "conv=notrunc,fsync", "status=none"], check=True, timeout=60)
    with open(image, "rb") as f:
        f.seek(100 * 4096)
        assert f.read(len(payload)) == payload
    # Writing past the end of a fixed-size image is refused.
    with open(m.path / "x.img", "r+b", buffering=0) as f:
        f.seek(image.stat().st_size)
        with pytest.raises(OSError) as e:
            f.write(b"x")
        assert e.value.errno == errno.ENOSPC
    # Truncating to another size is refused; the source keeps its size.
    with pytest.raises(OSError):
        os.truncate(m.path / "x.img", 4096)
    assert image.stat().st_size == 8 << 20


def test_readonly_entry_refuses_writes(mount, catalog, image):
    write_entry(catalog, "ro.img", f"source = {image}\nreadonly = yes\n")
    m = mount(catalog)
    st = os.stat(m.path / "ro.img")
    assert stat.S_IMODE(st.st_mode) == 0o444
    with pytest.raises(OSError) as e:
        open(m.path / "ro.img", "r+b")
    assert e.value.errno == errno.EROFS
    assert sha256(m.path / "ro.img") == sha256(image)


def test_readonly_mount_option(mount, catalog, image):
    write_entry(catalog, "x.img", f"source = {image}\n")
    m = mount(catalog, "-o", "ro")
    assert stat.S_IMODE(os.stat(m.path / "x.img").st_mode) == 0o444
    with pytest.raises(OSError) as e:
        open(m.path / "x.img", "r+b")
    assert e.value.errno == errno.EROFS


def test_nested_directories(mount, catalog, image):
    write_entry(catalog, "a/b/c.img", f"source = {image}\n")
    write_entry(catalog, "a/d.img", f"source = {image}\n")
    write_entry(catalog, "top.img", f"source = {image}\n")
    m = mount(catalog)
    assert sorted(os.listdir(m.path)) == ["a", "top.img"]
    assert sorted(os.listdir(m.path / "a")) == ["b", "d.img"]
    assert os.listdir(m.path / "a" / "b") == ["c.img"]
    assert stat.S_ISDIR(os.stat(m.path / "a" / "b").st_mode)
    assert sha256(m.path / "a" / "b" / "c.img") == sha256(image)
    with pytest.raises(FileNotFoundError):
        os.stat(m.path / "a" / "nope.img")
    with pytest.raises(NotADirectoryError):
        os.listdir(m.path / "top.img")


def test_seek_data_and_hole(mount, catalog, tmp_path):
    img = tmp_path / "sparse.img"
    with open(img, "wb") as f:
        f.truncate(64 << 20)
        f.seek(16 << 20)
        f.write(b"\xaa" * (1 << 20))
        f.seek(40 << 20)
        f.write(b"\xbb" * (1 << 20))
    write_entry(catalog, "s.img", f"source = {img}\n")
    m = mount(catalog)
    fd = os.open(m.path / "s.img", os.O_RDONLY)
    try:
        assert os.lseek(fd, 0, os.SEEK_DATA) == 16 << 20
        assert os.lseek(fd, 16 << 20, os.SEEK_HOLE) == 17 << 20
        assert os.lseek(fd, 17 << 20, os.SEEK_DATA) == 40 << 20
        assert os.lseek(fd, 40 << 20, os.SEEK_HOLE) == 41 << 20
        assert os.lseek(fd, 41 << 20, os.SEEK_HOLE) == 41 << 20
        with pytest.raises(OSError) as e:
            os.lseek(fd, 41 << 20, os.SEEK_DATA)
        assert e.value.errno == errno.ENXIO
    finally:
        os.close(fd)


def test_fallocate_punch_hole_and_zero_range(mount, catalog, tmp_path):
    img = make_random_file(tmp_path / "w.img", 4 << 20)
    write_entry(catalog, "w.img", f"source = {img}\n")
    m = mount(catalog)
    subprocess.run(["fallocate", "--punch-hole", "--offset", "1048576", "--length", "65536",
                    m.path / "w.img"], check=True, timeout=30)
    subprocess.run(["fallocate", "--zero-range", "--offset", "2097152", "--length", "8192",
                    m.path / "w.img"], check=True, timeout=30)
    data = img.read_bytes()
    assert data[1048576:1048576 + 65536] == bytes(65536)
    assert data[2097152:2097152 + 8192] == bytes(8192)
    assert data[1048576 - 10:1048576] != bytes(10)
    assert img.stat().st_size == 4 << 20
    # The punched range is a real hole in the source.
    fd = os.open(img, os.O_RDONLY)
    try:
        assert os.lseek(fd, 1048576, os.SEEK_HOLE) == 1048576
    finally:
        os.close(fd)
    # And fsync reaches the layer without error.
    fd = os.open(m.path / "w.img", os.O_RDWR)
    try:
        os.write(fd, b"sync me")
        os.fsync(fd)
    finally:
        os.close(fd)


def fallocate(fd, mode, offset, length):
    """fallocate(2) itself; returns 0 or the errno."""
    import ctypes
    import ctypes.util
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    r = libc.fallocate(fd, mode, offset, length)
    return 0 if r == 0 else ctypes.get_errno()


FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 1, 2


def test_fallocate_refused_on_readonly(mount, catalog, image):
    """A read-only entry cannot be opened for writing (EROFS), so no
    fallocate reaches its stack; on a read-only descriptor the kernel
    refuses it (EBADF); the source is untouched."""
    before = image.read_bytes()
    write_entry(catalog, "ro.img", f"source = {image}\nreadonly = yes\n")
    m = mount(catalog)
    with pytest.raises(OSError) as e:
        os.open(m.path / "ro.img", os.O_RDWR)
    assert e.value.errno == errno.EROFS
    fd = os.open(m.path / "ro.img", os.O_RDONLY)
    try:
        assert fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096) == errno.EBADF
        assert os.pread(fd, 4096, 0) == before[:4096]
    finally:
        os.close(fd)
    assert image.read_bytes() == before
    # The same call on a writable entry does reach the stack.
    write_entry(catalog, "rw.img", f"source = {image}\n")
    wait_for(lambda: (m.path / "rw.img").exists(), 30, "the writable entry")
    fd = os.open(m.path / "rw.img", os.O_RDWR)
    try:
        assert fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096) == 0
        assert os.pread(fd, 4096, 0) == bytes(4096)
    finally:
        os.close(fd)


def test_statfs(mount, catalog, image):
    write_entry(catalog, "a.img", f"source = {image}\n")
    write_entry(catalog, "b.img", f"source = {image}\n")
    m = mount(catalog)
    sv = os.statvfs(m.path)
    assert sv.f_files == 2
    assert sv.f_blocks * sv.f_frsize == 2 * image.stat().st_size


def test_sparse_4gib_copy(mount, catalog, tmp_path):
    img = tmp_path / "big.img"
    with open(img, "wb") as f:
        f.truncate(4 << 30)
        for off in (0, 1 << 30, (4 << 30) - 65536):
            f.seek(off)
            f.write(os.urandom(65536))
    write_entry(catalog, "big.img", f"source = {img}\nreadonly = yes\n")
    m = mount(catalog)
    out = tmp_path / "copy.img"
    subprocess.run(["cp", "--sparse=always", m.path / "big.img", out], check=True, timeout=600)
    assert out.stat().st_size == 4 << 30
    # The copy is sparse: far fewer blocks than its size.
    assert out.stat().st_blocks * 512 < 64 << 20
    # cksum (CRC) is fast enough for 4 GiB twice; sha256 is not here.
    sums = [subprocess.run(["cksum", p], check=True, capture_output=True, text=True,
                           timeout=300).stdout.split()[:2] for p in (out, img)]
    assert sums[0] == sums[1]
