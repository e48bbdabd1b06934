"""xz images over HTTP (a real nginx): random access to multi-block
files, and a single-block image decoded once into the disk cache and,
after a daemon restart, served from there without decoding again and
without fetching anything from the server."""

import os

from peers import check_random_reads, sha256, write_entry
from xz_helpers import make_image, xz

MIB = 1 << 20


def test_multi_block_over_http(mount, catalog, nginx, tmp_path):
    original = make_image(tmp_path / "orig.img", 24 * MIB, seed=6)
    xz(original, nginx.root / "disk.img.xz", "-T2", "--block-size=1MiB", "--check=sha256")
    write_entry(catalog, "disk.img", f"source = {nginx.url('disk.img.xz')}\n")
    m = mount(catalog)
    data = original.read_bytes()
    check_random_reads(m.path / "disk.img", data, seed=3)
    assert sha256(m.path / "disk.img") == sha256(original)
    assert "stack: xz < http" in m.status()


def test_multi_block_over_https(mount, catalog, nginx, test_ca, tmp_path):
    original = make_image(tmp_path / "orig.img", 8 * MIB, seed=7)
    xz(original, nginx.root / "s.img.xz", "--block-size=1MiB")
    write_entry(catalog, "s.img", f"source = {nginx.url('s.img.xz', https=True)}\n"
                f"ca-file = {test_ca.ca_cert}\n")
    m = mount(catalog)
    assert sha256(m.path / "s.img") == sha256(original)


def test_single_block_decoded_once_ever(mount, catalog, nginx, tmp_path):
    original = make_image(tmp_path / "orig.img", 24 * MIB, seed=9)
    xz(original, nginx.root / "one.img.xz")          # plain xz: one block
    write_entry(catalog, "one.img", f"source = {nginx.url('one.img.xz')}\n")
    cache = tmp_path / "diskcache"
    args = (f"--cache-dir={cache}", "--max-block-size=4M", "--memory-cache-size=8M")

    first = mount(catalog, *args)
    assert sha256(first.path / "one.img") == sha256(original)
    first.wait_log("decoded completely in .* served from the disk cache", timeout=30)
    status = first.status()
    assert "complete in disk cache" in status
    # Reads behind the frontier (here: anywhere) come from the disk cache.
    data = original.read_bytes()
    fd = os.open(first.path / "one.img", os.O_RDONLY)
    try:
        for off in (3 * MIB + 5, 20 * MIB, 100):
            assert os.pread(fd, 70000, off) == data[off:off + 70000]
    finally:
        os.close(fd)
    assert first.unmount() == 0
    gets_before = [r for r in nginx.requests() if r["method"] == "GET"]
    assert gets_before

    second = mount(catalog, *args)
    # The warm mount lists the entry from the disk cache; its first read
    # opens it.
    assert sha256(second.path / "one.img") == sha256(original)
    assert "is in the disk cache: served from there, not decoding" in second.log()
    assert "xz-decode-runs: 0" in second.status()
    assert "decoded completely" not in second.log()
    gets_after = [r for r in nginx.requests() if r["method"] == "GET"]
    assert gets_after == gets_before, gets_after[len(gets_before):]
