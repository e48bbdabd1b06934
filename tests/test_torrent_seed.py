"""Seeding from the daemon: a torrent entry serves the verified pieces it
has to other peers, on the port it announces.  The daemon first reads
the torrent from a real aria2c seeder; with aria2c stopped, an
independent leecher (python3-libtorrent) finds the daemon through the
tracker and gets the whole file from it alone."""

import json
import os
import re
import socket
import struct
import subprocess

import pytest

from bt_helpers import Aria2Seeder, info_hash, lt_leech, make_torrent, needs_swarm
from peers import make_random_file, scaled, sha256, wait_for, write_entry

pytestmark = needs_swarm

MIB = 1 << 20


def have_libtorrent():
    try:
        import libtorrent  # noqa: F401
        return True
    except ImportError:
        return False


needs_lt = pytest.mark.skipif(not have_libtorrent(),
                              reason="needs python3-libtorrent (scripts/install-deps.sh)")



@pytest.fixture
def data(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    make_random_file(d / "disk.img", 5 * MIB + 4321, seed=41)
    return d


def seeding_port(m):
    line = [l for l in m.status().splitlines() if "torrent-seeding:" in l][0]
    assert "port" in line, line
    return int(line.split("port")[1].split(",")[0])


def read_from_aria2_then_stop_it(tmp_path, tracker, data, torrent, m, name):
    tracker.allow(info_hash(torrent))
    seeder = Aria2Seeder(tmp_path / "seed", data, [torrent]).start()
    try:
        wait_for(lambda: tracker.complete(info_hash(torrent)) >= 1, 30, "the seeder")
        assert sha256(m.path / name) == sha256(data / "disk.img")
    finally:
        seeder.stop()


@needs_lt
def test_daemon_seeds_what_it_read_to_an_independent_leecher(mount, catalog, tmp_path,
                                                             tracker, data, diskshelf):
    torrent = make_torrent(data / "disk.img", tmp_path / "disk.torrent", tracker.http,
                           piece_log=16)
    write_entry(catalog, "disk.img", f"source = {torrent}\n")
    m = mount(catalog)
    port = seeding_port(m)
    assert port != 0
    read_from_aria2_then_stop_it(tmp_path, tracker, data, torrent, m, "disk.img")
    p = subprocess.run([str(diskshelf), "status", "--json", str(m.path)], capture_output=True,
                       text=True, timeout=30)
    entry = json.loads(p.stdout)["entries"][0]
    assert entry["torrent"]["pieces_have"] == entry["torrent"]["pieces_total"] == 81, entry
    assert entry["shared_by"] == 1 and entry["requests_in_flight"] == 0, entry
    # The leecher knows only the tracker: it finds the daemon on the port
    # the daemon announced.
    dl = tmp_path / "leech"
    dl.mkdir()
    rc, out = lt_leech(tmp_path, torrent, dl, limit=60)
    assert rc == 0, out
    assert sha256(dl / "disk.img") == sha256(data / "disk.img")
    status = m.status()
    up = int(status.split("torrent-seeding:")[1].split("unchoked,")[1].split()[0])
    assert up >= (5 * MIB + 4321), status


@needs_lt
def test_restarted_daemon_seeds_from_its_disk_cache(mount, catalog, tmp_path, tracker, data):
    """A second daemon over the same --cache-dir reads nothing and talks to
    no seeder: every piece it serves comes from the disk cache."""
    torrent = make_torrent(data / "disk.img", tmp_path / "disk.torrent", tracker.http,
                           piece_log=15)
    write_entry(catalog, "disk.img", f"source = {torrent}\n")
    cache = tmp_path / "shared-cache"
    m = mount(catalog, f"--cache-dir={cache}")
    read_from_aria2_then_stop_it(tmp_path, tracker, data, torrent, m, "disk.img")
    m.unmount()
    m2 = mount(catalog, f"--cache-dir={cache}")
    # The disk cache remembers the size, and that the entry seeds: the
    # mount opens it at once, and no file of the mount is ever opened.
    m2.wait_log("seeding on port", timeout=30)
    assert "open: yes" in m2.status()
    port = seeding_port(m2)
    dl = tmp_path / "leech"
    dl.mkdir()
    rc, out = lt_leech(tmp_path, torrent, dl, limit=60, peer=f"127.0.0.1:{port}")
    assert rc == 0, out
    assert sha256(dl / "disk.img") == sha256(data / "disk.img")
    assert "torrent-fetched: 0 pieces" in m2.status()


def test_seed_no_does_not_listen(mount, catalog, tmp_path, tracker, data):
    torrent = make_torrent(data / "disk.img", tmp_path / "disk.torrent", tracker.http)
    write_entry(catalog, "a.img", f"source = {torrent}\nseed = no\n")
    m = mount(catalog)
    assert "torrent-seeding: no" in m.status()
    m.unmount()
    write_entry(catalog, "a.img", f"source = {torrent}\n")
    m2 = mount(catalog, "-o", "torrent-listen=off")
    assert "torrent-seeding: no" in m2.status()


def test_download_full_with_extra_peers_and_no_tracker(mount, catalog, tmp_path, data):
    """`peers =` is the only way to the seeder (the torrent names no
    tracker); `download = full` makes the whole torrent local without a
    read, so it reads back after the seeder is gone."""
    torrent = make_torrent(data / "disk.img", tmp_path / "solo.torrent", None, piece_log=16)
    seeder = Aria2Seeder(tmp_path / "seed", data, [torrent]).start()
    try:
        write_entry(catalog, "disk.img",
                    f"source = {torrent}\ndownload = full\n"
                    f"peers = 127.0.0.1:{seeder.port}\n")
        m = mount(catalog)
        # No file is opened: the entry works with no reader, so the
        # daemon keeps it open from the mount on.
        m.wait_log("download = full: all", timeout=60)
        # Held for use, not as a size probe's spare that closes soon.
        assert "open: yes" in m.status()
    finally:
        seeder.stop()
    assert sha256(m.path / "disk.img") == sha256(data / "disk.img")
    assert "torrent-fetched: 81 pieces" in m.status()


def test_download_and_peers_values_are_checked(tmp_path, catalog, diskshelf):
    torrent = tmp_path / "x.torrent"
    torrent.write_bytes(b"d4:infod6:lengthi1e4:name1:x12:piece lengthi16384e6:pieces20:"
                        + bytes(20) + b"ee")
    write_entry(catalog, "a.img", f"source = {torrent}\ndownload = most\n")
    write_entry(catalog, "b.img", f"source = {torrent}\npeers = 127.0.0.1\n")
    p = subprocess.run([str(diskshelf), "check", str(catalog)], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode != 0
    assert "download = most: not a mode" in p.stdout + p.stderr
    assert "'127.0.0.1' is not host:port" in p.stdout + p.stderr


def test_fleet_second_daemon_reads_from_the_first_alone(mount, catalog, tmp_path, tracker,
                                                        data):
    """Two daemons (separate catalogs, caches and listen ports): A reads
    the image from the aria2c seeder, the seeder is stopped, and B reads
    the whole image from A alone, found through the tracker."""
    torrent = make_torrent(data / "disk.img", tmp_path / "disk.torrent", tracker.http,
                           piece_log=16)
    write_entry(catalog, "disk.img", f"source = {torrent}\n")
    a = mount(catalog, f"--cache-dir={tmp_path / 'cache-a'}")
    read_from_aria2_then_stop_it(tmp_path, tracker, data, torrent, a, "disk.img")
    catalog_b = tmp_path / "catalog-b"
    catalog_b.mkdir()
    write_entry(catalog_b, "disk.img", f"source = {torrent}\n")
    b = mount(catalog_b, f"--cache-dir={tmp_path / 'cache-b'}")
    assert sha256(b.path / "disk.img") == sha256(data / "disk.img")
    status_a = a.status()
    up = int(status_a.split("torrent-seeding:")[1].split("unchoked,")[1].split()[0])
    assert up >= 5 * MIB, status_a
    assert "torrent-fetched: 81 pieces" in b.status(), b.status()


def _recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("the daemon closed the connection")
        buf += chunk
    return buf


def _next_message(sock):
    """(id, payload) of the next message; keep-alives are skipped."""
    while True:
        (length,) = struct.unpack(">I", _recv_exact(sock, 4))
        if length:
            body = _recv_exact(sock, length)
            return body[0], body[1:]


def test_a_cancelled_request_is_not_served(mount, catalog, tmp_path, tracker, data):
    """BEP 3 cancel: a leecher that takes a request back before the daemon
    has served it does not get that block.  A raw peer sends REQUEST A,
    CANCEL A and REQUEST B in one packet: B arrives, A never does."""
    torrent = make_torrent(data / "disk.img", tmp_path / "disk.torrent", tracker.http,
                           piece_log=16)
    write_entry(catalog, "disk.img", f"source = {torrent}\n")
    m = mount(catalog)
    with open(m.path / "disk.img", "rb") as held:   # keeps the entry (and its port) open
        port = seeding_port(m)
        read_from_aria2_then_stop_it(tmp_path, tracker, data, torrent, m, "disk.img")
        ih = bytes.fromhex(info_hash(torrent))
        with socket.create_connection(("127.0.0.1", port), timeout=scaled(20)) as sock:
            sock.sendall(b"\x13BitTorrent protocol" + bytes(8) + ih
                         + b"-PY0001-" + os.urandom(12))
            assert _recv_exact(sock, 68)[28:48] == ih
            sock.sendall(struct.pack(">IB", 1, 2))            # interested
            while _next_message(sock)[0] != 1:                # until unchoked
                pass
            request = lambda i: struct.pack(">IBIII", 13, 6, i, 0, 16384)
            cancel = lambda i: struct.pack(">IBIII", 13, 8, i, 0, 16384)
            sock.sendall(request(3) + cancel(3) + request(5))
            blocks = []
            while 5 not in blocks:
                mid, payload = _next_message(sock)
                if mid == 7:
                    index, begin = struct.unpack(">II", payload[:8])
                    assert payload[8:] == (data / "disk.img").read_bytes()[
                        index * 65536 + begin:index * 65536 + begin + 16384]
                    blocks.append(index)
            assert blocks == [5], blocks
        status = m.status()
        cancelled = re.search(r"(\d+) requests cancelled", status)
        assert cancelled and int(cancelled.group(1)) == 1, status
        held.read(1)
