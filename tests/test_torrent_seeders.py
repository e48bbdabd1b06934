"""Torrent entries against seeders that are not ours, counted by the
seeders themselves: transmission-daemon (a second, independent
implementation) serves a whole image alone, and beside aria2c both serve
blocks; after one 4 KiB read at a random offset the seeder's own upload
counter (aria2's uploadLength, transmission's uploadedEver, over their
JSON-RPC) stays within the pieces the read touches plus the kernel's
read-ahead."""

import os
import random
import time

import pytest

from bt_helpers import (Aria2Seeder, TransmissionSeeder, info_hash, make_torrent, needs_swarm,
                        needs_transmission)
from peers import check_random_reads, make_random_file, sha256, wait_for, write_entry

pytestmark = needs_swarm

KIB = 1 << 10
MIB = 1 << 20
PIECE_LOG = 16                      # 64 KiB pieces: the engine's unit is the piece
PIECE = 1 << PIECE_LOG

# What one small random read may cost besides the pieces it touches:
# the kernel's read-ahead on the mount (--readahead, set below).  The
# remote engine's own read-ahead (4 MiB at first) is for sequential
# readers only, and a first read never is one (common/seqdetect.h).
# Seeders count the 13-byte header of each 16 KiB block's message too.
KERNEL_READAHEAD = 1 * MIB
BLOCK_OVERHEAD = 13 / (16 * KIB)


def seed_with(kind, workdir, data_dir, torrents, **kw):
    if kind == "aria2":
        return Aria2Seeder(workdir, data_dir, torrents, rpc=True, **kw).start()
    return TransmissionSeeder(workdir, data_dir, torrents, **kw).start()


def one_small_read_at_random(m, image, seeder, h):
    """One 4 KiB pread at a random offset (at least 2 MiB from either end),
    checked against the image;
    then the seeder's own upload counter, once settled, must cover the
    pieces the read touched and stay within them plus the read-ahead."""
    size = image.stat().st_size
    offset = random.SystemRandom().randrange(2 * MIB, size - 2 * MIB)
    fd = os.open(m.path / "disk.img", os.O_RDONLY)
    try:
        got = os.pread(fd, 4096, offset)
    finally:
        os.close(fd)
    with open(image, "rb") as f:
        f.seek(offset)
        assert got == f.read(4096), offset
    touched = (offset + 4095) // PIECE - offset // PIECE + 1
    bound = int((touched * PIECE + KERNEL_READAHEAD) * (1 + BLOCK_OVERHEAD))

    # Settled: unchanged for 2 s (read-ahead, if any, is through).
    last = {"value": -1, "since": 0.0}

    def settled():
        now, t = seeder.uploaded(h), time.monotonic()
        if now != last["value"]:
            last.update(value=now, since=t)
        return t - last["since"] >= 2
    wait_for(settled, 30, "the seeder's upload counter to settle")
    up = seeder.uploaded(h)
    assert touched * PIECE <= up <= bound, \
        f"the seeder uploaded {up} bytes for one 4 KiB read at {offset} (bound {bound})"
    print(f"one 4 KiB read at {offset}: the seeder uploaded {up} bytes (bound {bound})")
    return up


def test_one_small_read_costs_aria2_a_few_pieces(mount, catalog, tmp_path, tracker):
    d = tmp_path / "data"
    d.mkdir()
    image = make_random_file(d / "disk.img", 24 * MIB + 123, seed=53)
    torrent = make_torrent(image, tmp_path / "disk.torrent", tracker.http, piece_log=PIECE_LOG)
    h = info_hash(torrent)
    tracker.allow(h)
    seeder = seed_with("aria2", tmp_path / "aria2", d, [torrent])
    try:
        wait_for(lambda: tracker.complete(h) >= 1, 30, "the seeder's announce")
        assert seeder.uploaded(h) == 0
        write_entry(catalog, "disk.img", f"source = {torrent}\ntimeout = 30\nseed = no\n")
        m = mount(catalog, f"--readahead={KERNEL_READAHEAD // KIB}K")
        one_small_read_at_random(m, image, seeder, h)
    finally:
        seeder.stop()


@needs_transmission
def test_transmission_alone_one_small_read_then_the_whole_image(mount, catalog, tmp_path,
                                                               tracker):
    """transmission is the only seeder: one small read costs it a few
    pieces (its uploadedEver), then the whole image reads right and every
    byte of it came from transmission."""
    d = tmp_path / "data"
    d.mkdir()
    image = make_random_file(d / "disk.img", 6 * MIB + 4321, seed=51)
    torrent = make_torrent(image, tmp_path / "disk.torrent", tracker.http, piece_log=PIECE_LOG)
    h = info_hash(torrent)
    tracker.allow(h)
    tr = seed_with("transmission", tmp_path / "tr", d, [torrent])
    try:
        wait_for(lambda: tracker.complete(h) >= 1, 30, "transmission's announce")
        assert tr.uploaded(h) == 0
        write_entry(catalog, "disk.img", f"source = {torrent}\ntimeout = 30\nseed = no\n")
        m = mount(catalog, f"--readahead={KERNEL_READAHEAD // KIB}K")
        one_small_read_at_random(m, image, tr, h)
        assert sha256(m.path / "disk.img") == sha256(image)
        assert tr.uploaded(h) >= image.stat().st_size, tr.torrents_status()
    finally:
        tr.stop()


@needs_transmission
def test_aria2_and_transmission_both_serve_blocks(mount, catalog, tmp_path, tracker):
    """aria2c is capped (128 KiB/s) so that the read outlasts
    transmission's first unchoke (its rechoke runs every 10 s); the whole
    image and random ranges read right, and each seeder's own counter
    shows blocks it uploaded."""
    d = tmp_path / "data"
    d.mkdir()
    image = make_random_file(d / "disk.img", 3 * MIB + 999, seed=52)
    torrent = make_torrent(image, tmp_path / "disk.torrent", tracker.http, piece_log=PIECE_LOG)
    h = info_hash(torrent)
    tracker.allow(h)
    tr = seed_with("transmission", tmp_path / "tr", d, [torrent])
    aria = None
    try:
        aria = seed_with("aria2", tmp_path / "aria2", d, [torrent], uplimit="128K")
        wait_for(lambda: tracker.complete(h) >= 2, 30, "both seeders' announces")
        write_entry(catalog, "disk.img", f"source = {torrent}\ntimeout = 60\nseed = no\n")
        m = mount(catalog)
        assert sha256(m.path / "disk.img") == sha256(image)
        check_random_reads(m.path / "disk.img", image.read_bytes(), count=20)
        up_aria, up_tr = aria.uploaded(h), tr.uploaded(h)
        assert up_aria >= 16 * KIB and up_tr >= 16 * KIB, (up_aria, up_tr)
        assert up_aria + up_tr >= image.stat().st_size, (up_aria, up_tr)
        assert "torrent-peers: 2 known, 2 connected" in m.status()
    finally:
        if aria:
            aria.stop()
        tr.stop()
