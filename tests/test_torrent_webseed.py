"""BEP 19 web seeds: a torrent whose url-list names an HTTP server (a real
nginx on loopback) and that has no tracker nor peer reads from nginx
alone; every piece's SHA-1 is checked, so a web seed serving other bytes
is not believed."""

import errno
import os
import shutil

import pytest

from bt_helpers import make_torrent
from peers import Nginx, make_random_file, sha256, write_entry

pytestmark = pytest.mark.skipif(shutil.which("nginx") is None
                                or shutil.which("mktorrent") is None,
                                reason="needs nginx and mktorrent (scripts/install-deps.sh)")

MIB = 1 << 20


@pytest.fixture
def nginx(tmp_path):
    n = Nginx(tmp_path / "nginx")
    n.start()
    yield n
    n.stop()


def test_single_file_torrent_reads_from_its_web_seed_alone(mount, catalog, tmp_path, nginx):
    img = make_random_file(nginx.root / "disk.img", 3 * MIB + 777, seed=51)
    torrent = make_torrent(img, tmp_path / "disk.torrent", None, piece_log=16,
                           extra=["-w", f"http://127.0.0.1:{nginx.port}/disk.img"])
    write_entry(catalog, "disk.img", f"source = {torrent}\ntimeout = 5\n")
    m = mount(catalog)
    assert sha256(m.path / "disk.img") == sha256(img)
    status = m.status()
    assert "torrent-webseeds: 1, 49 pieces" in status, status
    assert "torrent-fetched: 0 pieces" in status, status


def test_multi_file_torrent_maps_files_under_the_web_seed(mount, catalog, tmp_path, nginx):
    top = tmp_path / "src" / "vm"
    (top / "disks").mkdir(parents=True)
    make_random_file(top / "notes.txt", 1000, seed=52)
    make_random_file(top / "disks" / "root disk.img", 2 * MIB + 3, seed=53)
    torrent = make_torrent(top, tmp_path / "vm.torrent", None, piece_log=15,
                           extra=["-w", f"http://127.0.0.1:{nginx.port}/"])
    shutil.copytree(top, nginx.root / "vm")
    write_entry(catalog, "root.img",
                f"source = {torrent}\nentry = disks/root disk.img\ntimeout = 5\n")
    m = mount(catalog)
    assert sha256(m.path / "root.img") == sha256(top / "disks" / "root disk.img")


def test_web_seed_with_other_bytes_is_not_believed(mount, catalog, tmp_path, nginx):
    img = make_random_file(tmp_path / "disk.img", 1 * MIB, seed=54)
    torrent = make_torrent(img, tmp_path / "disk.torrent", None, piece_log=16,
                           extra=["-w", f"http://127.0.0.1:{nginx.port}/disk.img"])
    make_random_file(nginx.root / "disk.img", 1 * MIB, seed=55)
    write_entry(catalog, "disk.img", f"source = {torrent}\ntimeout = 2\n")
    m = mount(catalog)
    fd = os.open(m.path / "disk.img", os.O_RDONLY)
    try:
        with pytest.raises(OSError) as e:
            os.pread(fd, 4096, 0)
        assert e.value.errno == errno.EIO
    finally:
        os.close(fd)
    assert "fails its SHA-1" in m.log()
