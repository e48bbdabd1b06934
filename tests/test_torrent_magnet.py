"""Magnet links (BEP 9 metadata over BEP 10): `source = magnet:?xt=...`
fetches the info dictionary from a real loopback swarm (opentracker +
aria2c, which serves ut_metadata), checks its SHA-1 and mounts the
torrent; a magnet nobody can serve fails with a clear error within the
entry's timeout."""

import base64
import shutil
import urllib.parse

import pytest

from bt_helpers import Aria2Seeder, Tracker, info_hash, make_torrent
from peers import make_random_file, sha256, wait_for, write_entry

pytestmark = pytest.mark.skipif(shutil.which("opentracker") is None
                                or shutil.which("aria2c") is None,
                                reason="needs opentracker and aria2 (scripts/install-deps.sh)")

MIB = 1 << 20


@pytest.fixture
def tracker(tmp_path):
    t = Tracker(tmp_path / "tracker").start()
    yield t
    t.stop()


@pytest.fixture
def swarm(tmp_path, tracker):
    """A 3 MiB disk image seeded by aria2c; yields (data file, torrent)."""
    d = tmp_path / "data"
    d.mkdir()
    make_random_file(d / "disk.img", 3 * MIB + 777, seed=31)
    torrent = make_torrent(d / "disk.img", tmp_path / "disk.torrent", tracker.http)
    tracker.allow(info_hash(torrent))
    seeder = Aria2Seeder(tmp_path / "seed", d, [torrent]).start()
    try:
        wait_for(lambda: tracker.complete(info_hash(torrent)) >= 1, 30, "the seeder")
        yield d / "disk.img", torrent, seeder
    finally:
        seeder.stop()


def magnet(hexhash, tracker=None, name="disk.img", base32=False):
    xt = base64.b32encode(bytes.fromhex(hexhash)).decode() if base32 else hexhash
    uri = f"magnet:?xt=urn:btih:{xt}&dn={urllib.parse.quote(name)}"
    if tracker:
        uri += "&tr=" + urllib.parse.quote(tracker, safe="")
    return uri


def test_magnet_through_the_tracker_reads_right(mount, catalog, tracker, swarm):
    data, torrent, _ = swarm
    write_entry(catalog, "disk.img",
                f"source = {magnet(info_hash(torrent), tracker.http)}\ntimeout = 30\n")
    # base32 info-hash, no tracker: the peer comes from `peers =`.
    write_entry(catalog, "b32.img",
                f"source = {magnet(info_hash(torrent), base32=True)}\n"
                f"peers = 127.0.0.1:{swarm[2].port}\ntimeout = 30\nseed = no\n")
    m = mount(catalog)
    assert (m.path / "disk.img").stat().st_size == 3 * MIB + 777
    assert sha256(m.path / "disk.img") == sha256(data)
    assert sha256(m.path / "b32.img") == sha256(data)
    assert "stack: torrent" in m.status()
    assert "fetching the metadata from peers" in m.log()


def test_magnet_without_a_good_peer_fails_clearly(mount, catalog, tracker, swarm):
    _, torrent, seeder = swarm
    wrong = "%040x" % (int(info_hash(torrent), 16) ^ 1)
    tracker.allow(wrong)
    write_entry(catalog, "wrong.img",
                f"source = {magnet(wrong, tracker.http)}\n"
                f"peers = 127.0.0.1:{seeder.port}\ntimeout = 3\n")
    write_entry(catalog, "none.img", f"source = {magnet('ab' * 20)}\ntimeout = 2\n")
    m = mount(catalog)
    m.wait_log("wrong.img.*no peer gave the metadata within 3 s", timeout=30)
    m.wait_log("none.img.*no peer gave the metadata within 2 s", timeout=30)
    assert not (m.path / "wrong.img").exists()
    assert not (m.path / "none.img").exists()
    status = m.status()
    assert "wrong.img.conf:1: torrent: magnet: no peer gave the metadata within 3 s" in status
    assert "none.img.conf:1: torrent: magnet: no peer gave the metadata within 2 s" in status

