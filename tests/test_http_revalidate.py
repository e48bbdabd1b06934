"""Revalidation of HTTP objects at open (`revalidate = SECONDS`): an
object replaced on the (real nginx) server, with another size or the same
size, is noticed when the file is opened again, even when every byte of
it is in the disk cache: the open fails with EIO and a log line, the
cached copy is dropped, and a file already open gets EIO for what it had
not read yet, never bytes of the new version."""

import errno
import os

import pytest

from http_helpers import http_server, place_image  # noqa: F401
from peers import make_random_file, scaled, sha256, wait_for, write_entry

MiB = 1 << 20


def replace_on_server(server, name, size, seed):
    """Replace server.root/name atomically by other random bytes with
    another mtime (nginx's ETag and Last-Modified follow the mtime)."""
    path = server.root / name
    old = path.stat().st_mtime
    tmp = make_random_file(server.root / (name + ".new"), size, seed=seed)
    os.utime(tmp, (old + 100, old + 100))
    os.replace(tmp, path)
    return path


def read_all(path):
    with open(path, "rb") as f:
        return f.read()


def cached_fully(m, size):
    return f"cache-present: {size} of {size} bytes" in m.status()


@pytest.mark.parametrize("new_size", [6 * MiB, 4 * MiB], ids=["other-size", "same-size"])
def test_replaced_object_noticed_at_open(mount, catalog, http_server, new_size):
    image = place_image(http_server, "disk.img", 4 * MiB)
    write_entry(catalog, "d.img", f"source = {http_server.url('disk.img')}\nrevalidate = 0\n")
    m = mount(catalog)
    assert read_all(m.path / "d.img") == image.read_bytes()
    wait_for(lambda: cached_fully(m, 4 * MiB), scaled(20), "the object to be cached")
    replace_on_server(http_server, "disk.img", new_size, seed=9)
    with pytest.raises(OSError) as e:
        open(m.path / "d.img", "rb")
    assert e.value.errno == errno.EIO
    m.wait_log(r"d\.img: .*disk\.img changed on the server \((its size changed from "
               r"4194304 to 6291456|its ETag/Last-Modified changed)")
    status = m.status()
    assert "http-state: changed on the server" in status
    assert "cache-present: 0 of" in status
    # Still an error, not the old bytes, on the next open.
    with pytest.raises(OSError) as e:
        open(m.path / "d.img", "rb")
    assert e.value.errno == errno.EIO


def test_open_file_gets_eio_not_new_bytes(mount, catalog, http_server):
    image = place_image(http_server, "disk.img", 8 * MiB)
    old = image.read_bytes()
    write_entry(catalog, "d.img", f"source = {http_server.url('disk.img')}\nrevalidate = 0\n")
    m = mount(catalog)
    f = open(m.path / "d.img", "rb", buffering=0)
    try:
        assert f.read(2 * MiB) == old[:2 * MiB]
        replace_on_server(http_server, "disk.img", 8 * MiB, seed=10)
        with pytest.raises(OSError):
            open(m.path / "d.img", "rb")       # this open notices the change
        f.seek(6 * MiB)
        with pytest.raises(OSError) as e:
            f.read(MiB)
        assert e.value.errno == errno.EIO
    finally:
        f.close()


def test_revalidate_interval_and_unreachable_server(mount, catalog, http_server):
    """Within `revalidate` seconds of the last check no request is made;
    a server that cannot be asked leaves the cached bytes readable."""
    image = place_image(http_server, "disk.img", 2 * MiB)
    write_entry(catalog, "d.img", f"source = {http_server.url('disk.img')}\nrevalidate = 0\n")
    write_entry(catalog, "slow.img", f"source = {http_server.url('disk.img')}\n"
                "revalidate = 3600\n")
    m = mount(catalog)
    for _ in range(3):
        assert read_all(m.path / "slow.img") == image.read_bytes()
    assert read_all(m.path / "d.img") == image.read_bytes()
    wait_for(lambda: m.status().count("cache-present: 2097152 of 2097152") >= 1,
             scaled(20), "the object to be cached")
    status = m.status()
    slow = status[status.index("[slow.img]"):]
    assert "http-revalidations: 0" in slow
    http_server.stop()
    try:
        assert read_all(m.path / "d.img") == image.read_bytes()
        m.wait_log(r"d\.img: .*cannot check whether it changed.*serving what is cached")
    finally:
        http_server.start()
