"""Versions of an entry: a file already open keeps reading the source it
was opened on, even while another process reads the new source through
the same name, with buffered and O_DIRECT descriptors, for local, HTTP
and xz entries (issue 15, item 1)."""

import mmap
import os
import subprocess

import pytest

from peers import make_random_file, scaled, wait_for, write_entry
from xz_helpers import make_image, xz

SIZE_A = (3 << 20) + 4096       # the old version is longer than the new one
SIZE_B = (2 << 20) + 8192
BLOCK = 1 << 20


def read_direct(fd, offset, count):
    """pread through an O_DIRECT descriptor with an aligned buffer."""
    size = (count + 4095) // 4096 * 4096
    buf = mmap.mmap(-1, size)
    try:
        n = os.preadv(fd, [buf], offset)
        return bytes(buf[:min(n, count)])
    finally:
        buf.close()


def read_range(fd, offset, count, direct):
    """count bytes at offset (fewer at the end of the file)."""
    out = bytearray()
    while len(out) < count:
        want = min(BLOCK, count - len(out))
        if direct:
            chunk = read_direct(fd, offset + len(out), want)
        else:
            chunk = os.pread(fd, want, offset + len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


def other_process_reads(path):
    """The whole file as another process reads it (cat)."""
    return subprocess.run(["cat", str(path)], check=True, capture_output=True,
                          timeout=scaled(120)).stdout


def sources(kind, tmp_path, request):
    """Two versions (source lines and plain bytes) of one entry."""
    if kind == "local":
        a = make_random_file(tmp_path / "a.img", SIZE_A, seed=11)
        b = make_random_file(tmp_path / "b.img", SIZE_B, seed=12)
        return f"source = {a}\n", f"source = {b}\n", a.read_bytes(), b.read_bytes()
    if kind == "xz":
        a = make_image(tmp_path / "a.img", SIZE_A, seed=11)
        b = make_image(tmp_path / "b.img", SIZE_B, seed=12)
        axz = xz(a, tmp_path / "a.img.xz", "--block-size=256KiB")
        bxz = xz(b, tmp_path / "b.img.xz", "--block-size=256KiB")
        return f"source = {axz}\n", f"source = {bxz}\n", a.read_bytes(), b.read_bytes()
    nginx = request.getfixturevalue("nginx")
    a = make_random_file(nginx.root / "a.img", SIZE_A, seed=11)
    b = make_random_file(nginx.root / "b.img", SIZE_B, seed=12)
    return (f"source = {nginx.url('a.img')}\n", f"source = {nginx.url('b.img')}\n",
            a.read_bytes(), b.read_bytes())


@pytest.mark.parametrize("direct", [False, True], ids=["buffered", "odirect"])
@pytest.mark.parametrize("kind", ["local", "http", "xz"])
def test_open_file_keeps_its_version(mount, catalog, tmp_path, request, kind, direct):
    conf_a, conf_b, data_a, data_b = sources(kind, tmp_path, request)
    write_entry(catalog, "x.img", conf_a)
    m = mount(catalog)
    path = m.path / "x.img"
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECT if direct else 0))
    try:
        # Part of the old version is in the page cache (or was read).
        assert read_range(fd, 0, 64 << 10, direct) == data_a[:64 << 10]
        assert read_range(fd, SIZE_B - 4096, 4096, direct) == data_a[SIZE_B - 4096:SIZE_B]
        write_entry(catalog, "x.img", conf_b)
        wait_for(lambda: os.stat(path).st_size == SIZE_B, 30, "the new version")
        # A second process reads the new version whole.
        assert other_process_reads(path) == data_b
        # The first descriptor still reads the old version, all of it.
        assert os.fstat(fd).st_size == SIZE_A
        assert read_range(fd, 0, SIZE_A, direct) == data_a
    finally:
        os.close(fd)
    # Once closed, only the new version is left.
    assert other_process_reads(path) == data_b
    # ... and the old one is closed once its last descriptor is.
    m.wait_log(r"x\.img: closed", timeout=30)


def test_removed_entry_comes_back_as_new_version(mount, catalog, tmp_path):
    """An entry removed while open and added again with another source:
    the old descriptor reads the old bytes, a new open the new ones."""
    a = make_random_file(tmp_path / "a.img", SIZE_A, seed=21)
    b = make_random_file(tmp_path / "b.img", SIZE_B, seed=22)
    write_entry(catalog, "sub/x.img", f"source = {a}\n")
    m = mount(catalog)
    path = m.path / "sub" / "x.img"
    with open(path, "rb") as f:
        assert f.read(4096) == a.read_bytes()[:4096]
        (catalog / "sub" / "x.img.conf").unlink()
        wait_for(lambda: not path.exists(), 30, "the entry to leave")
        write_entry(catalog, "sub/x.img", f"source = {b}\n")
        wait_for(lambda: path.exists(), 30, "the entry to come back")
        assert other_process_reads(path) == b.read_bytes()
        f.seek(0)
        assert f.read() == a.read_bytes()
