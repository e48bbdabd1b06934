"""bt/ end to end against a real loopback swarm: opentracker (HTTP and
UDP), aria2c seeders, and python3-libtorrent leeching from our seeding
side.  bt-get drives a bt_session; every byte it writes was verified
against the torrent's SHA-1s before it was stored."""

import pathlib

import pytest

from bt_helpers import (Aria2Seeder, BtGet, Tracker, bt_get, counters, info_hash,
                        lt_leech, make_torrent, needs_swarm)
from peers import make_random_file, sha256, stop_process, wait_for

pytestmark = needs_swarm



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


def test_fetch_multi_file_udp_tracker_many_readers(tmp_path, tracker, swarm_data):
    # Same info, two announce URLs: aria2 announces over HTTP (it needs
    # DHT for UDP), bt-get over UDP (BEP 15); one swarm per info-hash.
    multi = swarm_data / "multi"
    http_t = make_torrent(multi, tmp_path / "multi-http.torrent", tracker.http)
    udp_t = make_torrent(multi, tmp_path / "multi-udp.torrent", tracker.udp)
    assert info_hash(http_t) == info_hash(udp_t)
    tracker.allow(info_hash(http_t))
    seeder = Aria2Seeder(tmp_path / "seed", swarm_data, [http_t]).start()
    try:
        seeded(tracker, http_t)
        out = tmp_path / "out.bin"
        rc, stdout, stderr = bt_get("--out", out, "--timeout", "60", "--threads", "8", udp_t)
        assert rc == 0, stderr
        # mktorrent orders files by path: a.bin, c.txt, sub/b.bin
        want = concat([multi / "a.bin", multi / "c.txt", multi / "sub" / "b.bin"])
        assert out.read_bytes() == want
        assert int(counters(stdout)["announces_ok"]) >= 1
    finally:
        seeder.stop()


def test_fetch_from_two_seeders(tmp_path, tracker, swarm_data):
    torrent = make_torrent(swarm_data / "big.bin", tmp_path / "single.torrent", tracker.http)
    tracker.allow(info_hash(torrent))
    # Both capped so that neither alone is much faster than the other.
    a = Aria2Seeder(tmp_path / "seed-a", swarm_data, [torrent], uplimit="1M").start()
    b = Aria2Seeder(tmp_path / "seed-b", swarm_data, [torrent], uplimit="1M").start()
    try:
        seeded(tracker, torrent, 2)
        out = tmp_path / "out.bin"
        rc, stdout, stderr = bt_get("--out", out, "--timeout", "90", "--threads", "8",
                                    "--verbose", torrent, timeout=180)
        assert rc == 0, stderr
        assert sha256(out) == sha256(swarm_data / "big.bin")
        connected = {line.split("connected to ")[1].split()[0]
                     for line in stderr.splitlines() if "connected to " in line}
        assert f"127.0.0.1:{a.port}" in connected and f"127.0.0.1:{b.port}" in connected, stderr
        up_a = (tmp_path / "seed-a" / "aria2.log").read_text(errors="replace")
        up_b = (tmp_path / "seed-b" / "aria2.log").read_text(errors="replace")
        # each seeder's log shows it sent blocks to us
        assert "piece index=" in up_a and "piece index=" in up_b
    finally:
        a.stop()
        b.stop()


def test_no_peers_gives_eio_after_timeout(tmp_path, tracker, swarm_data):
    torrent = make_torrent(swarm_data / "big.bin", tmp_path / "single.torrent", tracker.http)
    tracker.allow(info_hash(torrent))
    rc, stdout, stderr = bt_get("--out", tmp_path / "out.bin", "--timeout", "3",
                                "--pieces", "5-5", torrent, timeout=60)
    assert rc == 1
    assert "piece 5: no peer delivered a verified copy within 3 s" in stderr


def test_down_tracker_is_logged_and_retried(tmp_path, swarm_data):
    tracker = Tracker(tmp_path / "tracker")       # port chosen, not started yet
    torrent = make_torrent(swarm_data / "big.bin", tmp_path / "single.torrent", tracker.http)
    h = info_hash(torrent)
    seeder = BtGet(tmp_path / "seed.log", "--seed", swarm_data / "big.bin",
                   "--announce-retry", "1", torrent).start()
    try:
        seeder.read_port()
        wait_for(lambda: "no tracker answered; retrying in 1 s" in seeder.log(), 30,
                 "the failed announce in the log")
        tracker.allow(h)
        tracker.start()
        # The retry reaches the tracker, which then lists us as a seeder.
        # (Retries double from 1 s, so allow for a few doublings.)
        try:
            wait_for(lambda: tracker.complete(h) >= 1, 90, "the retried announce")
        except TimeoutError:
            raise AssertionError(seeder.log()[-3000:])
        c = seeder.stop()
        assert int(c["announces_failed"]) >= 1 and int(c["announces_ok"]) >= 1
    finally:
        stop_process(seeder.proc)
        tracker.stop()


def test_libtorrent_leeches_from_our_seeder(tmp_path, tracker, swarm_data):
    torrent = make_torrent(swarm_data / "big.bin", tmp_path / "single.torrent", tracker.http)
    h = info_hash(torrent)
    tracker.allow(h)
    seeder = BtGet(tmp_path / "seed.log", "--seed", swarm_data / "big.bin", torrent).start()
    try:
        port = seeder.read_port()
        wait_for(lambda: tracker.complete(h) >= 1, 30, "our seeder on the tracker")
        dl = tmp_path / "dl"
        dl.mkdir()
        rc, out = lt_leech(tmp_path, torrent, dl, limit=90, peer=f"127.0.0.1:{port}")
        assert rc == 0, out + seeder.log()
        assert sha256(dl / "big.bin") == sha256(swarm_data / "big.bin")
        c = seeder.stop()
        assert int(c["bytes_up"]) >= 3 * 1024 * 1024 + 4567
    finally:
        stop_process(seeder.proc)


def test_libtorrent_leeches_multi_file_from_us(tmp_path, tracker, swarm_data):
    multi = swarm_data / "multi"
    torrent = make_torrent(multi, tmp_path / "multi.torrent", tracker.http)
    h = info_hash(torrent)
    tracker.allow(h)
    content = tmp_path / "content.bin"
    content.write_bytes(concat([multi / "a.bin", multi / "c.txt", multi / "sub" / "b.bin"]))
    seeder = BtGet(tmp_path / "seed.log", "--seed", content, torrent).start()
    try:
        port = seeder.read_port()
        dl = tmp_path / "dl"
        dl.mkdir()
        rc, out = lt_leech(tmp_path, torrent, dl, limit=90, peer=f"127.0.0.1:{port}")
        assert rc == 0, out + seeder.log()
        for name in ["a.bin", "c.txt", "sub/b.bin"]:
            assert sha256(dl / "multi" / name) == sha256(multi / name)
        assert int(seeder.stop()["bytes_up"]) >= 300001 + 12345 + 1024 * 1024 + 7
    finally:
        stop_process(seeder.proc)


def test_bad_pieces_ban_the_peer_and_good_peer_delivers(tmp_path, tracker, swarm_data):
    from bt_hostile import HostilePeer
    torrent = make_torrent(swarm_data / "big.bin", tmp_path / "single.torrent", tracker.http)
    h = info_hash(torrent)
    tracker.allow(h)
    pieces = (3 * 1024 * 1024 + 4567 + 32767) // 32768
    bad = HostilePeer(h, pieces, "garbage").start()
    seeder = Aria2Seeder(tmp_path / "seed", swarm_data, [torrent]).start()
    try:
        seeded(tracker, torrent)
        out = tmp_path / "out.bin"
        rc, stdout, stderr = bt_get("--out", out, "--timeout", "60", "--peer", bad.addr,
                                    "--threads", "4", torrent)
        assert rc == 0, stderr
        assert sha256(out) == sha256(swarm_data / "big.bin")
        c = counters(stdout)
        assert bad.requests > 0
        assert int(c["hash_failures"]) >= 1 and int(c["peers_banned"]) == 1, stdout
        assert f"peer {bad.addr} sent piece" in stderr and "banning it" in stderr
    finally:
        seeder.stop()
        bad.stop()


@pytest.mark.parametrize("mode", ["oversize", "badindex", "silent", "reject"])
def test_hostile_peer_is_dropped(tmp_path, swarm_data, mode):
    from bt_hostile import HostilePeer
    torrent = make_torrent(swarm_data / "big.bin", tmp_path / "single.torrent")
    h = info_hash(torrent)
    pieces = (3 * 1024 * 1024 + 4567 + 32767) // 32768
    bad = HostilePeer(h, pieces, mode).start()
    try:
        rc, stdout, stderr = bt_get("--out", tmp_path / "out.bin", "--timeout", "4",
                                    "--peer", bad.addr, "--pieces", "0-0", "--verbose",
                                    torrent, timeout=60)
        # No good copy anywhere: EIO after the timeout, and no crash.
        assert rc == 1, stderr
        assert "no peer delivered a verified copy" in stderr
        assert bad.connections >= 1
        if mode in ("oversize", "badindex"):
            assert "too long" in stderr or "out of range" in stderr, stderr
        if mode == "reject":
            # a rejected piece is not asked of that peer again for a while
            # (REFUSED_FORGET, 5 s: longer than this read's timeout): no loop
            assert 1 <= bad.requests <= 2, bad.requests
    finally:
        bad.stop()


def test_a_rejected_piece_is_asked_again_later(tmp_path, swarm_data):
    """A reject (BEP 6) is "not now": the peer choked, or its store was
    still taking the piece in.  The one peer that has the piece rejects
    the first request and then serves it; the read must get it (asked
    again once the reject is forgotten, 5 s), not fail at its timeout.
    Before, a rejected piece was never asked of that peer again, and in a
    fleet a daemon whose peers had all rejected a piece waited 30 s."""
    from bt_hostile import HostilePeer
    torrent = make_torrent(swarm_data / "big.bin", tmp_path / "single.torrent")
    data = (swarm_data / "big.bin").read_bytes()
    pieces = (len(data) + 32767) // 32768
    peer = HostilePeer(info_hash(torrent), pieces, "rejectfirst", data=data,
                       piece_length=32768).start()
    try:
        out = tmp_path / "out.bin"
        rc, stdout, stderr = bt_get("--out", out, "--timeout", "30", "--peer", peer.addr,
                                    "--pieces", "0-1", "--verbose", torrent, timeout=90)
        assert rc == 0, stderr
        assert peer.rejected == {0, 1}, peer.rejected
        assert out.read_bytes()[:2 * 32768] == data[:2 * 32768]
        # asked again, once per rejected piece's blocks: no loop
        assert peer.requests <= 2 * 2 * 2, peer.requests
    finally:
        peer.stop()


def test_announce_events_and_interval(tmp_path, swarm_data):
    from bt_helpers import FakeHttpTracker
    fake = FakeHttpTracker(interval=2).start()
    torrent = make_torrent(swarm_data / "big.bin", tmp_path / "single.torrent", fake.url)
    seeder = Aria2Seeder(tmp_path / "seed", swarm_data, [torrent]).start()
    fake.peers = [("127.0.0.1", seeder.port)]
    bt = BtGet(tmp_path / "bt.log", "--out", tmp_path / "out.bin", "--serve", "--timeout", "60",
               "--announce-min-interval", "1", torrent).start()
    try:
        port = bt.read_port()
        # (bt-get prints "fetched ok|failed" within its 60 s read timeout)
        assert bt.proc.stdout.readline().strip() == "fetched ok", bt.log()
        assert sha256(tmp_path / "out.bin") == sha256(swarm_data / "big.bin")
        # a few more announces at the tracker's interval, then stop
        wait_for(lambda: len(fake.ours()) >= 5, 60, "periodic announces")
        bt.stop()
        ours = fake.ours()
        events = [q.get("event") for _, q in ours]
        assert events[0] == "started", events
        assert "completed" in events, events
        assert events[-1] == "stopped", events
        assert all(q["compact"] == "1" and q["port"] == str(port) for _, q in ours)
        assert ours[-2][1]["left"] == "0"
        # the tracker's interval is respected: no periodic announce early
        periodic = [t for t, q in ours if "event" not in q]
        assert len(periodic) >= 2
        for a, b in zip(periodic, periodic[1:]):
            assert b - a >= 1.9, periodic
    finally:
        stop_process(bt.proc)
        seeder.stop()
        fake.stop()


def test_https_tracker_verified_with_ca_file(tmp_path, swarm_data, nginx, test_ca):
    from bt_helpers import bencode
    import socket as so
    seeder_torrent = make_torrent(swarm_data / "big.bin", tmp_path / "seed.torrent")
    seeder = Aria2Seeder(tmp_path / "seed", swarm_data, [seeder_torrent]).start()
    # nginx answers every announce with a fixed reply naming the seeder.
    (nginx.root / "announce").write_bytes(bencode(
        {"interval": 60, "peers": so.inet_aton("127.0.0.1") + seeder.port.to_bytes(2, "big")}))
    torrent = make_torrent(swarm_data / "big.bin", tmp_path / "https.torrent",
                           nginx.url("announce", https=True))
    try:
        out = tmp_path / "out.bin"
        rc, stdout, stderr = bt_get("--out", out, "--timeout", "60", "--ca-file",
                                    test_ca.ca_cert, torrent)
        assert rc == 0, stderr
        assert sha256(out) == sha256(swarm_data / "big.bin")
        # Without the CA the certificate is refused: logged, no peers, EIO.
        rc, stdout, stderr = bt_get("--out", tmp_path / "out2.bin", "--timeout", "3",
                                    "--pieces", "0-0", torrent, timeout=60)
        assert rc == 1
        assert f"tracker {nginx.url('announce', https=True)}" in stderr
        assert "certificate" in stderr.lower(), stderr
        assert "no tracker answered" in stderr
    finally:
        seeder.stop()


def test_udp_tracker_lost_packet_and_stray_reply(tmp_path, swarm_data):
    from bt_helpers import FakeUdpTracker
    seeder_torrent = make_torrent(swarm_data / "big.bin", tmp_path / "seed.torrent")
    seeder = Aria2Seeder(tmp_path / "seed", swarm_data, [seeder_torrent]).start()
    fake = FakeUdpTracker([("127.0.0.1", seeder.port)]).start()
    torrent = make_torrent(swarm_data / "big.bin", tmp_path / "udp.torrent", fake.url)
    try:
        out = tmp_path / "out.bin"
        rc, stdout, stderr = bt_get("--out", out, "--timeout", "60", torrent)
        assert rc == 0, stderr
        assert sha256(out) == sha256(swarm_data / "big.bin")
        assert fake.connects >= 2            # the lost connect was sent again
        assert fake.announces[0] == 2        # BEP 15 event 2: started
        assert fake.announces[-1] == 3       # stopped, on close
        assert int(counters(stdout)["announces_ok"]) >= 1
    finally:
        fake.stop()
        seeder.stop()


def test_many_requests_in_flight(tmp_path, swarm_data):
    import time
    from bt_hostile import HostilePeer
    # 256 KiB pieces = 16 blocks; a peer that never answers sees how many
    # requests we keep in flight at once.
    torrent = make_torrent(swarm_data / "big.bin", tmp_path / "single.torrent", piece_log=18)
    h = info_hash(torrent)
    silent = HostilePeer(h, 13, "silent").start()
    bt = BtGet(tmp_path / "bt.log", "--out", tmp_path / "out.bin", "--timeout", "600",
               "--threads", "8", "--peer", silent.addr, "--pieces", "0-7", torrent).start()
    try:
        # 8 pieces wanted at once: the default pipeline of 64 fills, and
        # not one request more goes out while none is answered.
        wait_for(lambda: silent.requests >= 64, 30, "64 requests")
        time.sleep(1)
        assert silent.requests == 64, silent.requests
    finally:
        stop_process(bt.proc)
        silent.stop()


def test_fetched_pieces_are_seeded_on(tmp_path, tracker, swarm_data):
    # bt-get fetches from aria2 into its store, the seeder goes away, and
    # libtorrent then gets every piece from us alone.
    torrent = make_torrent(swarm_data / "big.bin", tmp_path / "single.torrent", tracker.http)
    tracker.allow(info_hash(torrent))
    seeder = Aria2Seeder(tmp_path / "seed", swarm_data, [torrent]).start()
    bt = BtGet(tmp_path / "bt.log", "--out", tmp_path / "out.bin", "--serve", "--timeout", "60",
               torrent).start()
    try:
        seeded(tracker, torrent)
        port = bt.read_port()
        assert bt.proc.stdout.readline().strip() == "fetched ok", bt.log()
        seeder.stop()
        dl = tmp_path / "dl"
        dl.mkdir()
        rc, out = lt_leech(tmp_path, torrent, dl, limit=90, peer=f"127.0.0.1:{port}")
        assert rc == 0, out + bt.log()
        assert sha256(dl / "big.bin") == sha256(swarm_data / "big.bin")
        c = bt.stop()
        assert int(c["bytes_up"]) >= 3 * 1024 * 1024 + 4567
    finally:
        stop_process(bt.proc)
        seeder.stop()


def test_hybrid_torrent_fetched_through_its_v1_part(tmp_path, swarm_data):
    from bt_helpers import LtSeeder, bdecode, make_hybrid_torrent
    torrent = make_hybrid_torrent(swarm_data / "multi", tmp_path / "hybrid.torrent")
    info = bdecode(torrent.read_bytes())[b"info"]
    assert info[b"meta version"] == 2 and b"pieces" in info
    pads = [f for f in info[b"files"] if f.get(b"attr") == b"p"]
    assert pads, "libtorrent made no pad files; the test would not test them"
    seeder = LtSeeder(tmp_path / "lt", torrent, swarm_data).start()
    try:
        out = tmp_path / "out.bin"
        rc, stdout, stderr = bt_get("--out", out, "--timeout", "60", "--peer", seeder.addr,
                                    torrent)
        assert rc == 0, stderr
        # The v1 content: every file in torrent order, pad files as zeros.
        want = b""
        for f in info[b"files"]:
            if f.get(b"attr") == b"p":
                want += b"\0" * f[b"length"]
            else:
                want += (swarm_data / "multi" / "/".join(p.decode() for p in f[b"path"])).read_bytes()
        got = out.read_bytes()
        assert len(got) == len(want) and got == want
    finally:
        seeder.stop()
