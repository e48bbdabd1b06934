"""The copy-on-write overlay (`overlay = none|discard|PATH`, --overlay):
file modes and EROFS, reads merged from the store and the source,
partial blocks, zeroes and holes, SEEK_DATA/SEEK_HOLE, the discard store
dropped at the last close, persistent overlays across remounts, the
base check, sources that are never touched, and status."""

import ctypes
import errno
import os
import random
import shutil
import stat
import subprocess
import threading

import pytest

from peers import make_random_file, run, scaled, sha256, wait_for, write_entry
from tar_helpers import status_section

SIZE = 4 << 20


LIBC = ctypes.CDLL(None, use_errno=True)
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE = 0x01, 0x02, 0x10


def fallocate(fd, mode, offset, length):
    """fallocate(2) (Python's os module has only posix_fallocate)."""
    r = LIBC.fallocate(ctypes.c_int(fd), ctypes.c_int(mode), ctypes.c_int64(offset),
                       ctypes.c_int64(length))
    if r != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def pwrite_all(path, chunks):
    """Write (offset, bytes) pairs into path and fsync it."""
    fd = os.open(path, os.O_RDWR)
    try:
        for off, data in chunks:
            assert os.pwrite(fd, data, off) == len(data)
        os.fsync(fd)
    finally:
        os.close(fd)


def expected(base, chunks):
    """base with the chunks written over it."""
    out = bytearray(base)
    for off, data in chunks:
        out[off:off + len(data)] = data
    return bytes(out)


# Writes that cover whole blocks, partial blocks, block edges and the end.
CHUNKS = [(100, b"hello"), (4090, b"across-a-block-edge"), (65536, b"\x01" * 65536),
          (200000, b"y" * 10000), (SIZE - 7, b"THE-END")]


def test_default_none_keeps_readonly_sources_readonly(mount, catalog, nginx):
    make_random_file(nginx.root / "disk.img", SIZE)
    write_entry(catalog, "disk.img", f"source = {nginx.url('disk.img')}\n")
    m = mount(catalog)
    path = m.path / "disk.img"
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    with pytest.raises(OSError) as e:
        os.open(path, os.O_RDWR)
    assert e.value.errno == errno.EROFS
    assert "overlay" not in status_section(m.status(), "disk.img")


def test_discard_over_http_merges_reads_and_drops_at_last_close(mount, catalog, nginx):
    base = make_random_file(nginx.root / "disk.img", SIZE).read_bytes()
    write_entry(catalog, "disk.img", f"source = {nginx.url('disk.img')}\noverlay = discard\n")
    m = mount(catalog)
    path = m.path / "disk.img"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    keep = os.open(path, os.O_RDONLY)     # holds the store across the writer's close
    try:
        pwrite_all(path, CHUNKS)
        want = expected(base, CHUNKS)
        assert path.read_bytes() == want
        assert os.pread(keep, 64, 4080) == want[4080:4144]
        st = status_section(m.status(), "disk.img")
        assert st["stack"] == "overlay < http"
        assert st["overlay"].startswith("discard")
        assert int(st["overlay-written"].split()[0]) >= 20 * 4096
        assert int(st["overlay-allocated"].split()[0]) > 0
    finally:
        os.close(keep)
    # The last handle went: the writes are gone, the source never changed.
    wait_for(lambda: status_section(m.status(), "disk.img")["overlay-drops"] == "1", 30,
             "the discard store to be dropped")
    assert path.read_bytes() == base
    assert sha256(nginx.root / "disk.img") == sha256(path)
    assert not [r for r in nginx.requests() if r["method"] not in ("GET", "HEAD")]


def test_global_option_sets_the_default(mount, catalog, nginx):
    make_random_file(nginx.root / "src.img", SIZE)
    src = nginx.url("src.img")
    write_entry(catalog, "a.img", f"source = {src}\nreadonly = yes\n")
    write_entry(catalog, "b.img", f"source = {src}\n")
    write_entry(catalog, "c.img", f"source = {src}\noverlay = none\n")
    m = mount(catalog, "-o", "overlay=discard")
    # readonly = yes wins over the default; overlay = none opts out.
    assert stat.S_IMODE((m.path / "a.img").stat().st_mode) == 0o444
    assert stat.S_IMODE((m.path / "b.img").stat().st_mode) == 0o644
    assert stat.S_IMODE((m.path / "c.img").stat().st_mode) == 0o444
    pwrite_all(m.path / "b.img", CHUNKS)


def test_global_overlay_directory_makes_one_file_per_entry(mount, catalog, tmp_path):
    src = make_random_file(tmp_path / "src.img", SIZE)
    base = src.read_bytes()
    store = tmp_path / "overlays"
    store.mkdir()
    write_entry(catalog, "vm/a.img", f"source = {src}\n")
    m = mount(catalog, f"--overlay={store}")
    pwrite_all(m.path / "vm/a.img", CHUNKS)
    assert (store / "vm%2Fa.img.overlay").exists()
    assert m.unmount() == 0
    m2 = mount(catalog, "-o", f"overlay={store}")
    assert (m2.path / "vm/a.img").read_bytes() == expected(base, CHUNKS)
    assert src.read_bytes() == base


def test_zeroes_and_holes_merge_with_the_source_map(mount, catalog, tmp_path):
    # Source: data at [0, 1M) and [3M, 4M), a hole between.
    src = tmp_path / "sparse.img"
    rng = random.Random(5)
    with open(src, "wb") as f:
        f.truncate(SIZE)
        f.write(rng.randbytes(1 << 20))
        f.seek(3 << 20)
        f.write(rng.randbytes(1 << 20))
    base = src.read_bytes()
    write_entry(catalog, "s.img", f"source = {src}\noverlay = discard\n")
    m = mount(catalog)
    path = m.path / "s.img"
    fd = os.open(path, os.O_RDWR)
    try:
        assert os.lseek(fd, 0, os.SEEK_HOLE) == 1 << 20
        assert os.lseek(fd, 1 << 20, os.SEEK_DATA) == 3 << 20
        # Data written into the hole shows up as data.
        os.pwrite(fd, b"d" * 8192, (2 << 20))
        assert os.lseek(fd, 1 << 20, os.SEEK_DATA) == 2 << 20
        assert os.lseek(fd, 2 << 20, os.SEEK_HOLE) == (2 << 20) + 8192
        # Punching over source data reads as zeroes and is a hole.
        fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 256 << 10, 128 << 10)
        assert os.pread(fd, 128 << 10, 256 << 10) == bytes(128 << 10)
        assert os.lseek(fd, 0, os.SEEK_HOLE) == 256 << 10
        assert os.lseek(fd, 256 << 10, os.SEEK_DATA) == 384 << 10
        # Zero range that is not block aligned: the edges keep the source.
        fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, (3 << 20) + 1000, 20000)
        got = os.pread(fd, 30000, 3 << 20)
        assert got == base[3 << 20:(3 << 20) + 1000] + bytes(20000) + \
            base[(3 << 20) + 21000:(3 << 20) + 30000]
        # Writing zeroes over data keeps reading zeroes.
        os.pwrite(fd, bytes(4096), 8192)
        assert os.pread(fd, 4096, 8192) == bytes(4096)
        os.fsync(fd)
    finally:
        os.close(fd)
    assert src.read_bytes() == base


def test_writable_sources_are_never_touched(mount, catalog, tmp_path):
    from nbd_helpers import NbdServer
    local = make_random_file(tmp_path / "local.img", SIZE, seed=2)
    exported = make_random_file(tmp_path / "exported.img", SIZE, seed=3)
    local_sum, exported_sum = sha256(local), sha256(exported)
    server = NbdServer("nbdkit", exported, tmp_path / "nbd").start()
    try:
        write_entry(catalog, "local.img", f"source = {local}\noverlay = discard\n")
        write_entry(catalog, "nbd.img", f"source = {server.uri()}\noverlay = "
                    f"{tmp_path / 'nbd.overlay'}\n")
        m = mount(catalog)
        for name, src in (("local.img", local), ("nbd.img", exported)):
            base = src.read_bytes()
            keep = os.open(m.path / name, os.O_RDONLY)    # keeps a discard store
            pwrite_all(m.path / name, CHUNKS)
            assert (m.path / name).read_bytes() == expected(base, CHUNKS)
            os.truncate(m.path / name, SIZE)          # qemu does this; same size is fine
            os.close(keep)
        assert m.unmount() == 0
    finally:
        server.stop()
    assert sha256(local) == local_sum
    assert sha256(exported) == exported_sum


def test_persistent_overlay_survives_remounts(diskshelf, mount, catalog, tmp_path, nginx):
    base = make_random_file(nginx.root / "disk.img", SIZE).read_bytes()
    ovl = tmp_path / "disk.overlay"
    write_entry(catalog, "disk.img", f"source = {nginx.url('disk.img')}\noverlay = {ovl}\n")
    m = mount(catalog)
    pwrite_all(m.path / "disk.img", CHUNKS)
    shown = subprocess.run([diskshelf, "status", m.path], capture_output=True, text=True,
                           timeout=scaled(30)).stdout
    st = status_section(shown, "disk.img")
    assert st["overlay"] == str(ovl)
    assert int(st["overlay-allocated"].split()[0]) >= 20 * 4096
    assert m.unmount() == 0
    m2 = mount(catalog)
    assert (m2.path / "disk.img").read_bytes() == expected(base, CHUNKS)
    more = [(1 << 20, b"second mount")]
    pwrite_all(m2.path / "disk.img", more)
    assert m2.unmount() == 0
    m3 = mount(catalog, "--cache-dir=none")
    assert (m3.path / "disk.img").read_bytes() == expected(base, CHUNKS + more)


def test_persistent_overlay_refuses_another_base(mount, catalog, tmp_path, nginx):
    make_random_file(nginx.root / "disk.img", SIZE, seed=1)
    ovl = tmp_path / "disk.overlay"
    write_entry(catalog, "disk.img", f"source = {nginx.url('disk.img')}\noverlay = {ovl}\n")
    m = mount(catalog)
    pwrite_all(m.path / "disk.img", CHUNKS)
    assert m.unmount() == 0
    # Same size, other bytes: the ETag changes, the overlay must not be reused.
    make_random_file(nginx.root / "disk.img", SIZE, seed=9)
    os.utime(nginx.root / "disk.img", (1700000000, 1700000000))  # nginx's ETag is mtime-size
    m2 = mount(catalog)
    # The warm mount lists the entry with its remembered size; its first
    # open opens the stack, which refuses the overlay: EIO, and the entry
    # is left out.
    with pytest.raises(OSError) as err:
        open(m2.path / "disk.img", "rb").close()
    assert err.value.errno == errno.EIO
    m2.wait_log(r"disk\.img: left out of the mount: overlay: .*disk\.overlay was made over"
                r" another base.*fix: put the original source back, or delete the overlay")
    assert not (m2.path / "disk.img").exists()
    # Another size is refused too.
    make_random_file(nginx.root / "disk.img", SIZE + 4096, seed=1)
    m2.unmount()
    m3 = mount(catalog)
    with pytest.raises(OSError) as err:
        open(m3.path / "disk.img", "rb").close()
    assert err.value.errno == errno.EIO
    m3.wait_log(r"was made over another base")
    assert not (m3.path / "disk.img").exists()
    # A file that is not an overlay is refused, not overwritten.
    junk = tmp_path / "junk.overlay"
    junk.write_bytes(b"not an overlay" * 100)
    write_entry(catalog, "junk.img", f"source = {nginx.url('disk.img')}\noverlay = {junk}\n")
    m3.wait_log(r"junk\.img: left out of the mount: overlay: .*junk\.overlay is not a"
                r" diskshelf overlay", timeout=30)
    assert junk.read_bytes() == b"not an overlay" * 100


def test_one_overlay_file_is_not_shared_by_two_entries(mount, catalog, tmp_path):
    src = make_random_file(tmp_path / "src.img", SIZE)
    ovl = tmp_path / "shared.overlay"
    write_entry(catalog, "a.img", f"source = {src}\noverlay = {ovl}\n")
    write_entry(catalog, "b.img", f"source = {src}\noverlay = {ovl}\n")
    m = mount(catalog)
    names = sorted(p.name for p in m.path.iterdir())
    assert len(names) == 1, names
    m.wait_log(r"in use by another entry or daemon")


def test_bad_overlay_values_are_reported(diskshelf, catalog, tmp_path):
    src = make_random_file(tmp_path / "src.img", 4096)
    write_entry(catalog, "a.img", f"source = {src}\noverlay = relative/path\n")
    write_entry(catalog, "b.img", f"source = {src}\noverlay = /nonexistent-dir/x.overlay\n")
    write_entry(catalog, "c.img", f"source = {src}\noverlay = {tmp_path}\n")
    r = subprocess.run([diskshelf, "check", catalog], capture_output=True, text=True,
                       timeout=scaled(30))
    assert r.returncode != 0
    assert "a.img.conf:2: bad value for 'overlay'" in r.stderr + r.stdout
    assert "/nonexistent-dir' of the overlay file does not exist" in r.stderr + r.stdout
    assert "is a directory, not an overlay file" in r.stderr + r.stdout


def test_overlay_over_xz_and_tar_member(mount, catalog, tmp_path, nginx):
    from xz_helpers import make_image, xz
    img = make_image(tmp_path / "disk.img", SIZE)
    base = img.read_bytes()
    xz(img, nginx.root / "disk.img.xz", "--block-size=256KiB")
    run(["tar", "-cf", tmp_path / "bundle.tar", "-C", tmp_path, "disk.img"])
    write_entry(catalog, "x.img", f"source = {nginx.url('disk.img.xz')}\noverlay = discard\n")
    write_entry(catalog, "t.img", f"source = {tmp_path / 'bundle.tar'}\nentry = disk.img\n"
                f"overlay = {tmp_path / 't.overlay'}\n")
    m = mount(catalog)
    for name, stack in (("x.img", "overlay < xz < http"), ("t.img", "overlay < tar < file")):
        assert status_section(m.status(), name)["stack"] == stack
        keep = os.open(m.path / name, os.O_RDONLY)        # keeps a discard store
        pwrite_all(m.path / name, CHUNKS)
        assert (m.path / name).read_bytes() == expected(base, CHUNKS)
        os.close(keep)


def test_concurrent_partial_writes_into_new_blocks(mount, catalog, tmp_path):
    src = make_random_file(tmp_path / "src.img", SIZE)
    base = src.read_bytes()
    write_entry(catalog, "c.img", f"source = {src}\noverlay = {tmp_path / 'c.overlay'}\n")
    m = mount(catalog)
    path = m.path / "c.img"
    # 8 threads each write every 8th 512-byte sector of the same 64 blocks.
    pieces = [(i * 512, bytes([i % 251 + 1]) * 512) for i in range(64 * 8)]
    errors = []

    def writer(k):
        try:
            fd = os.open(path, os.O_RDWR)
            try:
                for off, data in pieces[k::8]:
                    os.pwrite(fd, data, off)
            finally:
                os.close(fd)
        except OSError as e:
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=scaled(60))
    assert not errors
    assert path.read_bytes() == expected(base, pieces)


def test_sigkill_mid_writes_leaves_a_consistent_overlay(mount, catalog, tmp_path):
    """Kill the daemon (SIGKILL) while writes stream in: the overlay must
    open again, keep every write that was fsynced, and every block must
    read as one of the versions written to it (or the source's)."""
    src = make_random_file(tmp_path / "src.img", SIZE)
    base = src.read_bytes()
    ovl = tmp_path / "crash.overlay"
    write_entry(catalog, "c.img", f"source = {src}\noverlay = {ovl}\n")
    m = mount(catalog)
    path = m.path / "c.img"
    synced = [(b * 4096, bytes([b % 200 + 1]) * 4096) for b in range(0, 1024, 4)]
    pwrite_all(path, synced)
    # Versions each block may hold after the crash.
    versions = {b: [base[b * 4096:(b + 1) * 4096]] for b in range(SIZE // 4096)}
    for off, data in synced:
        versions[off // 4096] = [data]
    stop = threading.Event()
    rng = random.Random(11)
    plan = []
    for i in range(4000):
        b = rng.randrange(SIZE // 4096)
        data = bytes([rng.randrange(1, 256)]) * 4096
        plan.append((b, data))
        versions[b].append(data)

    def writer():
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            return
        try:
            for i, (b, data) in enumerate(plan):
                if stop.is_set():
                    return
                os.pwrite(fd, data, b * 4096)
                if i % 97 == 0:
                    os.fsync(fd)
        except OSError:
            pass          # the daemon died under us: expected
        finally:
            try:
                os.close(fd)
            except OSError:
                pass

    t = threading.Thread(target=writer)
    t.start()
    wait_for(lambda: int(status_section(m.status(), "c.img")["overlay-written"].split()[0])
             > (len(synced) + 200) * 4096, 60, "writes to stream in")
    m.expect_unclean = True
    os.kill(m.pid, 9)
    stop.set()
    m.proc.wait(timeout=scaled(30))
    t.join(timeout=scaled(60))
    m.stop()
    m2 = mount(catalog)
    got = (m2.path / "c.img").read_bytes()
    for off, data in synced:
        b = off // 4096
        assert got[off:off + 4096] in versions[b], f"block {b} lost its synced write"
    bad = [b for b in range(SIZE // 4096) if got[b * 4096:(b + 1) * 4096] not in versions[b]]
    assert not bad, f"blocks with bytes never written: {bad[:10]}"
    assert src.read_bytes() == base
