"""Members at the start, middle and end of a larger archive: the right
bytes, found by reading headers only (member data in between is skipped,
not read), holes mapped through, many readers at once."""

import os
import random
import threading

import pytest

from peers import sha256, write_entry
from tar_helpers import (status_section, tar_create, tar_member_sha256,
                         write_random, write_sparse)

MIB = 1024 * 1024
MID_SIZE = 48 * MIB
MID_CHUNKS = [0, 5 * MIB + 4096, 17 * MIB, 33 * MIB + 512 * 7, MID_SIZE - 65536]


@pytest.fixture(scope="module")
def big_archive(tmp_path_factory):
    """first.bin (2 MiB), 40 small files, mid.img (48 MiB, mostly holes),
    40 more small files, last.bin (3 MiB): about 54 MiB, stored sparse."""
    d = tmp_path_factory.mktemp("big")
    tree = d / "tree"
    write_random(tree / "first.bin", 2 * MIB, seed=1)
    write_sparse(tree / "mid.img", MID_SIZE, MID_CHUNKS, seed=2)
    write_random(tree / "last.bin", 3 * MIB + 1000, seed=3)
    small = []
    for i in range(80):
        n = f"small/f{i:02d}.txt"
        write_random(tree / n, 100 + 997 * i, seed=100 + i)
        small.append(n)
    names = ["first.bin", *small[:40], "mid.img", *small[40:], "last.bin"]
    archive = tar_create(d / "big.tar", tree, names, "gnu", sparse_output=True)
    return archive, tree


def test_start_middle_end_match_tar_xO(big_archive, catalog, mount):
    archive, tree = big_archive
    members = ["first.bin", "small/f07.txt", "mid.img", "small/f63.txt", "last.bin"]
    for i, n in enumerate(members):
        write_entry(catalog, f"m{i}", f"source = {archive}\nentry = {n}\n")
    m = mount(catalog)
    for i, n in enumerate(members):
        assert sha256(m.path / f"m{i}") == tar_member_sha256(archive, n), n


def test_last_member_is_found_without_reading_the_data_before_it(
        big_archive, catalog, mount):
    # Reaching last.bin needs the 83 headers, not the ~54 MiB of data
    # between them: the scan's reads of the file below stay small.
    archive, tree = big_archive
    write_entry(catalog, "last", f"source = {archive}\nentry = last.bin\n")
    m = mount(catalog)
    st = status_section(m.status(), "last")
    scanned = int(st["tar-bytes-scanned"])
    headers = int(st["tar-headers-scanned"])
    assert headers == 83
    assert scanned < 4 * MIB, st
    assert scanned < os.path.getsize(archive) / 10
    assert "found after reading" in m.log()
    assert sha256(m.path / "last") == sha256(tree / "last.bin")


def test_holes_map_through_to_the_member(big_archive, catalog, mount):
    # The archive file is sparse; SEEK_DATA/SEEK_HOLE on the member give
    # runs whose bytes agree with the member's content.
    archive, tree = big_archive
    write_entry(catalog, "mid", f"source = {archive}\nentry = mid.img\n")
    m = mount(catalog)
    ref = open(tree / "mid.img", "rb").read()
    fd = os.open(m.path / "mid", os.O_RDONLY)
    try:
        holes = 0
        off = 0
        while off < MID_SIZE:
            data = os.lseek(fd, off, os.SEEK_DATA) if off < MID_SIZE else MID_SIZE
            if data > off:
                holes += data - off
                assert ref[off:data] == bytes(data - off)
            if data >= MID_SIZE:
                break
            hole = os.lseek(fd, data, os.SEEK_HOLE)
            assert hole > data
            assert os.pread(fd, hole - data, data) == ref[data:hole]
            off = hole
        assert holes > MID_SIZE // 2
    finally:
        os.close(fd)
    for c in MID_CHUNKS:
        with open(m.path / "mid", "rb") as f:
            f.seek(c)
            assert f.read(65536) == ref[c:c + 65536]


def test_many_readers_at_once(big_archive, catalog, mount):
    archive, tree = big_archive
    write_entry(catalog, "first", f"source = {archive}\nentry = first.bin\n")
    write_entry(catalog, "last", f"source = {archive}\nentry = last.bin\n")
    m = mount(catalog)
    refs = {k: open(tree / f"{k}.bin", "rb").read() for k in ("first", "last")}
    errors = []

    def reader(seed):
        rng = random.Random(seed)
        try:
            for _ in range(60):
                k = rng.choice(["first", "last"])
                ref = refs[k]
                off = rng.randrange(len(ref))
                n = rng.randrange(1, 300_000)
                with open(m.path / k, "rb", buffering=0) as f:
                    got = os.pread(f.fileno(), n, off)
                assert got == ref[off:off + n], (k, off, n)
        except Exception as e:  # collected and re-raised in the main thread
            errors.append(e)

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors[0]
