"""The single-block path with a disk cache, from a local file: decoded
once while readers wait behind the frontier, served from the disk cache
after a restart, and still correct when the cache is too small to hold
the image (chunks evicted: decoding starts again for them)."""

import os
import random
import threading

from peers import scaled, sha256, write_entry
from xz_helpers import make_image, xz

MIB = 1 << 20


def test_readers_wait_for_frontier_then_restart_uses_cache(mount, catalog, tmp_path):
    original = make_image(tmp_path / "orig.img", 32 * MIB, seed=21)
    packed = xz(original, tmp_path / "one.img.xz", "-6")
    write_entry(catalog, "one.img", f"source = {packed}\n")
    args = (f"--cache-dir={tmp_path / 'dc'}", "--max-block-size=4M")
    data = original.read_bytes()

    m = mount(catalog, *args)
    errors = []

    def reader(seed):
        # Everything a reader meets, wrong bytes or an exception (EIO, a
        # timeout), is collected: an exception in a thread would
        # otherwise only be printed, and the test would pass.
        try:
            rng = random.Random(seed)
            fd = os.open(m.path / "one.img", os.O_RDONLY)
            try:
                for _ in range(40):
                    off = rng.randrange(len(data))
                    n = rng.choice([4096, 70000])
                    if os.pread(fd, n, off) != data[off:off + n]:
                        errors.append((seed, off, n, "wrong bytes"))
            finally:
                os.close(fd)
        except BaseException as e:   # noqa: B036 - reported below
            errors.append((seed, repr(e)))

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=scaled(120))
    assert not any(t.is_alive() for t in threads), "a reader is still waiting"
    assert errors == []
    m.wait_log("decoded completely", timeout=60)
    assert "xz-decode-runs: 1" in m.status()
    assert sha256(m.path / "one.img") == sha256(original)
    assert m.unmount() == 0

    again = mount(catalog, *args)
    # The size is remembered, so the entry opens at its first use.
    assert sha256(again.path / "one.img") == sha256(original)
    assert "served from there, not decoding" in again.log()
    assert "xz-decode-runs: 0" in again.status()


def test_disk_cache_too_small_still_correct(mount, catalog, tmp_path):
    original = make_image(tmp_path / "orig.img", 24 * MIB, seed=22)
    packed = xz(original, tmp_path / "one.img.xz")
    write_entry(catalog, "one.img", f"source = {packed}\n")
    m = mount(catalog, f"--cache-dir={tmp_path / 'dc'}", "--cache-size=6M",
              "--max-block-size=4M", "--memory-cache-size=16M")
    assert sha256(m.path / "one.img") == sha256(original)
    data = original.read_bytes()
    fd = os.open(m.path / "one.img", os.O_RDONLY | os.O_DIRECT)
    import mmap
    buf = mmap.mmap(-1, 65536)
    try:
        for off in (MIB, 20 * MIB, 2 * MIB):
            assert os.preadv(fd, [buf], off) == 65536
            assert bytes(buf) == data[off:off + 65536]
    finally:
        os.close(fd)
