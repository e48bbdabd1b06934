"""Magnet links (BEP 9 metadata over BEP 10): `source = magnet:?xt=...`
fetches the info dictionary from a real loopback swarm (opentracker +
aria2c, which serves ut_metadata), checks its SHA-1 and mounts the
torrent; a magnet nobody can serve fails with a clear error within the
entry's timeout."""

import base64
import socket
import struct
import threading
import shutil
import urllib.parse

import pytest

from bt_helpers import Aria2Seeder, Tracker, bdecode, info_hash, make_torrent
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



class FakeMetadataPeer:
    """A hostile peer on 127.0.0.1: handshakes for any info-hash, offers
    ut_metadata and answers every request with `reply` (bytes after the
    extended header) built by reply(piece)."""

    def __init__(self, size, reply):
        self.size, self.reply = size, reply
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def _run(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                try:
                    self._serve(conn)
                except OSError:
                    pass

    def _recv(self, conn, n):
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                raise OSError("closed")
            data += chunk
        return data

    def _serve(self, conn):
        conn.settimeout(5)
        hs = self._recv(conn, 68)
        reserved = bytearray(8)
        reserved[5] |= 0x10
        conn.sendall(hs[:20] + bytes(reserved) + hs[28:48] + b"-FAKE0-" + bytes(13))
        ext = b"d1:md11:ut_metadatai3ee13:metadata_sizei%dee" % self.size
        conn.sendall(struct.pack(">IBB", len(ext) + 2, 20, 0) + ext)
        while True:
            (n,) = struct.unpack(">I", self._recv(conn, 4))
            msg = self._recv(conn, n)
            if n >= 2 and msg[0] == 20 and msg[1] == 3:
                piece = int(msg.split(b"5:piecei")[1].split(b"e")[0])
                body = self.reply(piece)
                conn.sendall(struct.pack(">IBB", len(body) + 2, 20, 1) + body)

    def stop(self):
        self.stopping = True
        self.thread.join(timeout=10)
        self.sock.close()


@pytest.mark.parametrize("kind", ["wrong-data", "reject"])
def test_hostile_metadata_peer_is_refused(mount, catalog, kind):
    size = 20000                        # two metadata pieces
    def reply(piece):
        if kind == "reject":
            return b"d8:msg_typei2e5:piecei%dee" % piece
        n = 16384 if piece == 0 else size - 16384
        return b"d8:msg_typei1e5:piecei%de10:total_sizei%dee" % (piece, size) + b"x" * n
    peer = FakeMetadataPeer(size, reply).start()
    try:
        write_entry(catalog, "bad.img",
                    f"source = {magnet('cd' * 20)}\npeers = 127.0.0.1:{peer.port}\n"
                    "timeout = 2\n")
        m = mount(catalog)
        want = ("metadata fails its SHA-1" if kind == "wrong-data"
                else "peer rejected metadata piece 0")
        m.wait_log("bad.img.*no peer gave the metadata within 2 s.*" + want, timeout=30)
        assert not (m.path / "bad.img").exists()
    finally:
        peer.stop()


def test_magnet_metadata_is_cached_and_a_restart_needs_no_peer(mount, catalog, tmp_path,
                                                               tracker, swarm):
    """The verified info dictionary goes into --cache-dir (keyed by the
    info-hash): a damaged copy is refused by its SHA-1 and fetched again;
    a good one lets a restarted daemon open the magnet and read the whole
    image from cached pieces with the seeder and the tracker gone."""
    data, torrent, seeder = swarm
    cache = tmp_path / "mcache"
    write_entry(catalog, "disk.img",
                f"source = {magnet(info_hash(torrent), tracker.http)}\ntimeout = 5\n"
                "seed = no\n")
    m = mount(catalog, f"--cache-dir={cache}", name="first")
    assert sha256(m.path / "disk.img") == sha256(data)
    assert "fetching the metadata from peers" in m.log()
    assert m.unmount() == 0
    blobs = list(cache.glob("*.dsb"))
    assert len(blobs) == 1, sorted(p.name for p in cache.iterdir())
    good = blobs[0].read_bytes()
    assert good.endswith(bdecode(torrent.read_bytes())[b"__info_raw__"])

    # One flipped byte in the cached info dict: refused, fetched again.
    blobs[0].write_bytes(good[:-10] + bytes([good[-10] ^ 1]) + good[-9:])
    m = mount(catalog, f"--cache-dir={cache}", name="damaged")
    assert sha256(m.path / "disk.img") == sha256(data)
    log = m.log()
    assert "the disk cache's metadata is refused (metadata fails its SHA-1)" in log, log
    assert "fetching the metadata from peers" in log
    assert m.unmount() == 0
    assert blobs[0].read_bytes() == good

    # No seeder, no tracker: the metadata and the pieces come from the cache.
    seeder.stop()
    tracker.stop()
    m = mount(catalog, f"--cache-dir={cache}", name="restarted")
    assert (m.path / "disk.img").stat().st_size == 3 * MIB + 777
    assert sha256(m.path / "disk.img") == sha256(data)
    log = m.log()
    assert "metadata from the disk cache" in log, log
    assert "fetching the metadata" not in log
