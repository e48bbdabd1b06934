"""Torrents on the remote-bytes engine: verified pieces land in the disk
cache (a restarted daemon reads the whole file with the seeder gone, no
peer traffic), two entries over one torrent share one engine object,
and unmount does not wait for pieces the swarm cannot deliver."""

import errno
import os
import subprocess
import threading

import pytest

from bt_helpers import Aria2Seeder, info_hash, make_torrent, needs_swarm
from peers import make_random_file, scaled, sha256, wait_for, write_entry

pytestmark = needs_swarm

MIB = 1 << 20



@pytest.fixture
def data(tmp_path):
    d = tmp_path / "data"
    (d / "vm").mkdir(parents=True)
    make_random_file(d / "vm" / "a.img", 5 * MIB + 777, seed=31)
    make_random_file(d / "vm" / "b.img", 3 * MIB + 5, seed=32)
    return d


def seed(tmp_path, tracker, data, torrent):
    tracker.allow(info_hash(torrent))
    s = Aria2Seeder(tmp_path / "seed", data, [torrent]).start()
    wait_for(lambda: tracker.complete(info_hash(torrent)) >= 1, 30, "the seeder")
    return s


def entry_counter(status, entry, key):
    block = status[status.index(f"[{entry}]"):]
    return int(block.split(f"\n{key}: ")[1].split()[0])


def pieces_fetched(status, entry):
    return entry_counter(status, entry, "torrent-fetched")


@pytest.mark.parametrize("piece_log", [16, 21], ids=["64K-pieces", "2M-pieces"])
def test_two_files_share_one_object_and_pieces_survive_a_restart(
        mount, catalog, tmp_path, tracker, data, piece_log):
    """Pieces smaller than the disk cache's 1 MiB chunk are stored once a
    whole chunk of them is in; larger ones are the unit themselves."""
    torrent = make_torrent(data / "vm", tmp_path / "vm.torrent", tracker.http,
                           piece_log=piece_log)
    write_entry(catalog, "a.img", f"source = {torrent}\nentry = a.img\n")
    write_entry(catalog, "b.img", f"source = {torrent}\nentry = b.img\n")
    seeder = seed(tmp_path, tracker, data, torrent)
    try:
        m = mount(catalog, name="first")
        assert sha256(m.path / "a.img") == sha256(data / "vm" / "a.img")
        assert sha256(m.path / "b.img") == sha256(data / "vm" / "b.img")
        status = m.status()
        assert status.count("torrent-shared-by: 2") == 2, status
        # One session, one set of counters: each piece fetched once.
        total = 8 * MIB + 782
        pieces = -(-total // (1 << piece_log))
        assert pieces_fetched(status, "a.img") <= pieces, status
        wait_for(lambda: m.status().count(f"cache-present: {total} of {total}") == 2,
                 scaled(20), "every piece to be in the disk cache")
        assert m.unmount() == 0
    finally:
        seeder.stop()
    m = mount(catalog, name="second")
    assert sha256(m.path / "a.img") == sha256(data / "vm" / "a.img")
    assert sha256(m.path / "b.img") == sha256(data / "vm" / "b.img")
    assert pieces_fetched(m.status(), "a.img") == 0


@pytest.mark.parametrize("piece_log", [15, 16, 18], ids=["32K-pieces", "64K-pieces", "256K-pieces"])
def test_a_whole_read_under_memory_pressure_lands_whole_in_the_disk_cache(
        mount, catalog, tmp_path, tracker, piece_log):
    """Pieces smaller than a disk-cache chunk wait in memory for the rest
    of their chunk.  A sequential read with a small memory budget makes
    fetchers drop memory-cached pieces for buffers; before, that dropped
    pieces still waiting for their chunk, and those chunks never reached
    the disk cache (a 1 GiB read left 3 MiB out, fetched again after a
    restart)."""
    d = tmp_path / "data"
    d.mkdir()
    size = 96 * MIB + 4097
    make_random_file(d / "big.img", size, seed=33)
    torrent = make_torrent(d / "big.img", tmp_path / "big.torrent", tracker.http,
                           piece_log=piece_log)
    write_entry(catalog, "big.img", f"source = {torrent}\n")
    seeder = seed(tmp_path, tracker, d, torrent)
    try:
        m = mount(catalog, "--memory-cache-size=16M", name="first")
        assert sha256(m.path / "big.img") == sha256(d / "big.img")
        wait_for(lambda: f"cache-present: {size} of {size}" in m.status(),
                 scaled(20), "every piece to be in the disk cache")
        assert m.unmount() == 0
    finally:
        seeder.stop()
    m = mount(catalog, name="second")
    assert sha256(m.path / "big.img") == sha256(d / "big.img")
    assert pieces_fetched(m.status(), "big.img") == 0


def test_a_complete_single_file_torrent_is_passed_through(
        mount, catalog, tmp_path, tracker, data):
    """Once every piece of a single-file torrent is in the disk cache, a
    fresh mount lends that cache file (FUSE passthrough): the kernel reads
    it, no READ reaches the daemon, no piece comes from a peer.  A file
    of a multi-file torrent sits at another offset of its object and is
    still read through the daemon, also the one at offset 0."""
    single = make_torrent(data / "vm" / "a.img", tmp_path / "a.torrent", tracker.http)
    multi = make_torrent(data / "vm", tmp_path / "vm.torrent", tracker.http)
    write_entry(catalog, "single.img", f"source = {single}\n")
    write_entry(catalog, "multi-a.img", f"source = {multi}\nentry = a.img\n")
    write_entry(catalog, "multi-b.img", f"source = {multi}\nentry = b.img\n")
    seeders = [seed(tmp_path / "s1", tracker, data / "vm", single),
               seed(tmp_path / "s2", tracker, data, multi)]
    try:
        m = mount(catalog, name="first")
        for name, file in (("single", "a"), ("multi-a", "a"), ("multi-b", "b")):
            assert sha256(m.path / f"{name}.img") == sha256(data / "vm" / f"{file}.img")
        a, total = 5 * MIB + 777, 8 * MIB + 782
        wait_for(lambda: f"cache-present: {a} of {a}" in m.status(),
                 scaled(20), "every piece of a.torrent to be in the disk cache")
        wait_for(lambda: f"cache-present: {total} of {total}" in m.status(),
                 scaled(20), "every piece of vm.torrent to be in the disk cache")
        assert m.unmount() == 0
    finally:
        for s in seeders:
            s.stop()
    m = mount(catalog, name="second")
    if "FUSE passthrough on" not in m.log():
        pytest.skip("this kernel offers no FUSE passthrough")
    with open(m.path / "single.img", "rb") as f:
        f.seek(3 * MIB + 5)
        want = (data / "vm" / "a.img").read_bytes()
        assert f.read(100000) == want[3 * MIB + 5:3 * MIB + 100005]
    for name, file in (("single", "a"), ("multi-a", "a"), ("multi-b", "b")):
        assert sha256(m.path / f"{name}.img") == sha256(data / "vm" / f"{file}.img")
    status = m.status()
    assert entry_counter(status, "single.img", "passthrough-opens") >= 2, status
    assert entry_counter(status, "single.img", "reads") == 0, status
    for name in ("multi-a.img", "multi-b.img"):
        assert entry_counter(status, name, "passthrough-opens") == 0, status
        assert entry_counter(status, name, "reads") > 0, status
        assert pieces_fetched(status, name) == 0, status
    assert pieces_fetched(status, "single.img") == 0, status


def test_unmount_does_not_wait_for_the_swarm(mount, catalog, tmp_path, tracker, data):
    """With no peer at all a read waits for its timeout (here 600 s);
    a lazy unmount meanwhile fails the read with EIO and ends the daemon
    long before that."""
    torrent = make_torrent(data / "vm" / "a.img", tmp_path / "a.torrent", tracker.http)
    tracker.allow(info_hash(torrent))
    write_entry(catalog, "a.img", f"source = {torrent}\ntimeout = 600\n")
    m = mount(catalog, "--cache-dir=none")
    result = {}

    def reader():
        try:
            fd = os.open(m.path / "a.img", os.O_RDONLY)
            try:
                result["data"] = os.pread(fd, 4096, 3 * MIB)
            finally:
                os.close(fd)
        except OSError as e:
            result["errno"] = e.errno

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    wait_for(lambda: "torrent-pending-chunks: 1" in m.status(), scaled(10),
             "the read to wait for its piece")
    subprocess.run(["fusermount3", "-uz", str(m.path)], check=True, timeout=scaled(10))
    t.join(timeout=scaled(30))
    assert not t.is_alive(), "the read still waits for the swarm"
    assert result.get("errno") == errno.EIO, result
    m.proc.wait(timeout=scaled(30))
