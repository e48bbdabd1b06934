"""The torrent transport in the daemon: a catalog entry
`source = /path/x.torrent` (with `entry =` for a multi-file torrent)
mounts the file; pieces are fetched on demand from a real loopback swarm
(opentracker + aria2c) and verified; with no peers a read fails with EIO
after the entry's timeout."""

import errno
import os
import re
import time

import pytest

from bt_helpers import Aria2Seeder, info_hash, make_torrent, needs_swarm
from peers import (check_random_reads, make_random_file, scaled, sha256, wait_for,
                   write_entry)

pytestmark = needs_swarm

MIB = 1 << 20



@pytest.fixture
def data(tmp_path):
    d = tmp_path / "data"
    (d / "vm" / "disks").mkdir(parents=True)
    make_random_file(d / "disk.img", 6 * MIB + 1234, seed=21)
    make_random_file(d / "vm" / "disks" / "root.img", 3 * MIB + 5, seed=22)
    make_random_file(d / "vm" / "notes.txt", 777, seed=23)
    return d


def seed(tmp_path, tracker, data, torrent):
    tracker.allow(info_hash(torrent))
    s = Aria2Seeder(tmp_path / "seed", data, [torrent]).start()
    wait_for(lambda: tracker.complete(info_hash(torrent)) >= 1, 30, "the seeder")
    return s


def test_single_file_torrent_reads_on_demand(mount, catalog, tmp_path, tracker, data):
    torrent = make_torrent(data / "disk.img", tmp_path / "disk.torrent", tracker.http,
                           piece_log=16)
    seeder = seed(tmp_path, tracker, data, torrent)
    try:
        write_entry(catalog, "disk.img", f"source = {torrent}\n")
        m = mount(catalog)
        path = m.path / "disk.img"
        assert path.stat().st_size == 6 * MIB + 1234
        # One small read fetches only a few pieces, not the whole torrent.
        with open(path, "rb") as f:
            f.seek(5 * MIB)
            assert f.read(4096) == (data / "disk.img").read_bytes()[5 * MIB:5 * MIB + 4096]
        status = m.status()
        assert "stack: torrent" in status
        fetched = int(status.split("torrent-fetched: ")[1].split()[0])
        assert 1 <= fetched < 20, status
        check_random_reads(path, (data / "disk.img").read_bytes(), count=30)
        assert sha256(path) == sha256(data / "disk.img")
    finally:
        seeder.stop()


def test_multi_file_torrent_entry_picks_the_file(mount, catalog, tmp_path, tracker, data):
    torrent = make_torrent(data / "vm", tmp_path / "vm.torrent", tracker.http)
    seeder = seed(tmp_path, tracker, data, torrent)
    try:
        write_entry(catalog, "root.img", f"source = {torrent}\nentry = disks/root.img\n")
        write_entry(catalog, "notes", f"source = {torrent}\nentry = notes.txt\n")
        write_entry(catalog, "nofile", f"source = {torrent}\nentry = nope.img\n")
        write_entry(catalog, "noentry", f"source = {torrent}\n")
        m = mount(catalog)
        assert sha256(m.path / "root.img") == sha256(data / "vm" / "disks" / "root.img")
        assert (m.path / "notes").read_bytes() == (data / "vm" / "notes.txt").read_bytes()
        assert not (m.path / "nofile").exists()
        assert not (m.path / "noentry").exists()
        log = m.log()
        assert 'no file "nope.img" in the torrent; it has: disks/root.img, notes.txt' in log
        assert "fix: add 'entry = disks/root.img'" in log
    finally:
        seeder.stop()


def test_stalled_peers_do_not_hold_reads(mount, catalog, tmp_path, tracker, data):
    """Two peers that claim every piece and then stall (one never answers,
    one stops in the middle of a piece, both keep their connections open)
    sit beside a real seeder: every read still completes from the seeder
    with the right bytes, none waits for the entry's timeout to fail."""
    from bt_hostile import HostilePeer
    torrent = make_torrent(data / "disk.img", tmp_path / "disk.torrent", tracker.http,
                           piece_log=16)
    pieces = (6 * MIB + 1234 + 65535) // 65536
    silent = HostilePeer(info_hash(torrent), pieces, "silent").start()
    stall = HostilePeer(info_hash(torrent), pieces, "stall").start()
    seeder = seed(tmp_path, tracker, data, torrent)
    try:
        write_entry(catalog, "disk.img", f"source = {torrent}\ntimeout = 20\n"
                    f"peers = {silent.addr},{stall.addr}\n")
        m = mount(catalog)
        path = m.path / "disk.img"
        expected = (data / "disk.img").read_bytes()
        with open(path, "rb") as held:   # the entry stays open meanwhile
            wait_for(lambda: _peers_connected(m) >= 3, scaled(30),
                     "the seeder and both stalled peers")
            check_random_reads(path, expected, count=20)
            assert sha256(path) == sha256(data / "disk.img")
            held.read(1)
        print(f"requests: silent {silent.requests}, stall {stall.requests}")
        assert silent.requests > 0 and stall.requests > 0, \
            "the stalled peers were never asked"
        assert "no peer delivered" not in m.log()
    finally:
        seeder.stop()
        silent.stop()
        stall.stop()


def _peers_connected(m):
    found = re.search(r"torrent-peers: \d+ known, (\d+) connected", m.status())
    return int(found.group(1)) if found else 0


def test_no_peers_gives_eio_after_the_entry_timeout(mount, catalog, tmp_path, tracker, data):
    torrent = make_torrent(data / "disk.img", tmp_path / "disk.torrent", tracker.http)
    tracker.allow(info_hash(torrent))
    write_entry(catalog, "disk.img", f"source = {torrent}\ntimeout = 3\n")
    m = mount(catalog)
    fd = os.open(m.path / "disk.img", os.O_RDONLY)
    try:
        with pytest.raises(OSError) as e:
            os.pread(fd, 4096, 0)
        assert e.value.errno == errno.EIO
    finally:
        os.close(fd)
    m.wait_log("no peer delivered a verified copy within 3 s", timeout=10)


def test_no_peers_a_large_read_fails_once_not_per_kernel_retry(mount, catalog, tmp_path,
                                                               tracker, data):
    """The kernel retries a failed read at once, page by page, and a read
    that came back short is followed by one at the failing offset: each
    used to wait the entry's timeout again (EIO after 2-4 x timeout).  A
    piece that just failed now fails those retries at once, so a 1 MiB
    read gets EIO after one timeout (well before a second one)."""
    torrent = make_torrent(data / "disk.img", tmp_path / "disk.torrent", tracker.http)
    tracker.allow(info_hash(torrent))
    write_entry(catalog, "disk.img", f"source = {torrent}\ntimeout = 4\n")
    m = mount(catalog)
    with open(m.path / "disk.img", "rb", buffering=0) as f:
        start = time.monotonic()
        with pytest.raises(OSError) as e:
            f.read(MIB)
        took = time.monotonic() - start
    assert e.value.errno == errno.EIO
    assert took < 4 + min(scaled(2), 3.5), took


def test_torrent_found_by_content_and_lookalike_stays_a_file(mount, catalog, tmp_path, tracker,
                                                            data):
    torrent = make_torrent(data / "disk.img", tmp_path / "disk.meta", tracker.http)
    seeder = seed(tmp_path, tracker, data, torrent)
    lookalike = tmp_path / "raw.img"
    lookalike.write_bytes(b"d5:hello" + bytes(70000))      # starts like bencode, is not
    try:
        write_entry(catalog, "disk.img", f"source = {torrent}\n")
        write_entry(catalog, "raw.img", f"source = {lookalike}\n")
        m = mount(catalog)
        assert sha256(m.path / "disk.img") == sha256(data / "disk.img")
        assert (m.path / "raw.img").read_bytes() == lookalike.read_bytes()
        status = m.status()
        assert "stack: torrent" in status and "stack: file" in status, status
    finally:
        seeder.stop()


def test_seeder_joining_after_the_first_announce_is_found(mount, catalog, tmp_path, tracker,
                                                          data):
    """The daemon announces before any seeder exists; a read then waits.
    A starving session asks the tracker again (after announce_retry, not
    the tracker's half-hour interval), finds the late seeder, and the read
    succeeds within the entry's timeout.  (Not seeding, so the seeder
    cannot find the daemon by itself first.)"""
    torrent = make_torrent(data / "disk.img", tmp_path / "late.torrent", tracker.http,
                           piece_log=16)
    tracker.allow(info_hash(torrent))
    write_entry(catalog, "late.img", f"source = {torrent}\ntimeout = 90\nseed = no\n")
    m = mount(catalog)
    # The file is opened first: an entry nobody holds open is closed 10 s
    # after the mount learned its size, and its announce counters go with
    # it (under load the wait below could miss that window).
    with open(m.path / "late.img", "rb") as f:
        wait_for(lambda: re.search(r"^torrent-announces: [1-9]\d* ok", m.status(), re.M),
                 30, "the first announce")
        seeder = Aria2Seeder(tmp_path / "seed", data, [torrent]).start()
        try:
            f.seek(4 * MIB)
            assert f.read(65536) == (data / "disk.img").read_bytes()[4 * MIB:4 * MIB + 65536]
        finally:
            seeder.stop()
    assert "asking the tracker for peers again" in m.log()
