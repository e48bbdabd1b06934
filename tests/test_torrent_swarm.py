"""bt/ end to end against a real loopback swarm: opentracker (HTTP and
UDP), aria2c seeders, and python3-libtorrent leeching from our seeding
side.  bt-get drives a bt_session; every byte it writes was verified
against the torrent's SHA-1s before it was stored."""

import pathlib
import shutil

import pytest

from bt_helpers import (Aria2Seeder, BtGet, Tracker, bt_get, counters, info_hash,
                        lt_leech, make_torrent)
from peers import make_random_file, sha256, stop_process, wait_for

pytestmark = pytest.mark.skipif(shutil.which("opentracker") is None
                                or shutil.which("aria2c") is None,
                                reason="needs opentracker and aria2 (scripts/install-deps.sh)")


@pytest.fixture
def tracker(tmp_path):
    t = Tracker(tmp_path / "tracker").start()
    yield t
    t.stop()


@pytest.fixture
def swarm_data(tmp_path):
    """A single file (not piece-aligned) and a multi-file directory."""
    data = tmp_path / "data"
    data.mkdir()
    make_random_file(data / "big.bin", 3 * 1024 * 1024 + 4567, seed=11)
    multi = data / "multi"
    (multi / "sub").mkdir(parents=True)
    make_random_file(multi / "a.bin", 300001, seed=12)
    make_random_file(multi / "sub" / "b.bin", 1024 * 1024 + 7, seed=13)
    make_random_file(multi / "c.txt", 12345, seed=14)
    return data


def concat(paths):
    return b"".join(pathlib.Path(p).read_bytes() for p in paths)


def seeded(tracker, torrent, count=1):
    h = info_hash(torrent)
    wait_for(lambda: tracker.complete(h) >= count, 30, f"{count} seeder(s) on the tracker")


def test_fetch_single_file_http_tracker(tmp_path, tracker, swarm_data):
    torrent = make_torrent(swarm_data / "big.bin", tmp_path / "single.torrent", tracker.http)
    tracker.allow(info_hash(torrent))
    seeder = Aria2Seeder(tmp_path / "seed", swarm_data, [torrent]).start()
    try:
        seeded(tracker, torrent)
        out = tmp_path / "out.bin"
        rc, stdout, stderr = bt_get("--out", out, "--timeout", "60", "--threads", "4", torrent)
        assert rc == 0, stderr
        assert sha256(out) == sha256(swarm_data / "big.bin")
        c = counters(stdout)
        assert int(c["announces_ok"]) >= 1
        assert int(c["pieces_fetched"]) == (3 * 1024 * 1024 + 4567 + 32767) // 32768
        assert int(c["hash_failures"]) == 0
    finally:
        seeder.stop()
