"""Memory stays bounded: reading a whole 4 GiB image through the mount
keeps the daemon's peak RSS (VmHWM) under --memory-cache-size plus a
fixed overhead, however large the image."""

import os
import random
import subprocess

from peers import scaled, vm_hwm_kib, write_entry
from xz_helpers import xz

MIB = 1 << 20
GIB = 1 << 30
CACHE = 64 * MIB
# The daemon's own baseline, FUSE buffers, decoder dictionaries and input
# buffers of the workers; sanitizer builds carry their own shadow memory
# and allocator on top (their quarantine is made small below).
ASAN = "asan" in os.environ.get("DISKSHELF_BIN", "")
OVERHEAD = (160 if ASAN else 64) * MIB


def make_big_xz(path, size, tmp, seed=8):
    """An xz file of `size` decompressed bytes, cheaply: 16 MiB pieces,
    mostly zero with 1 MiB of random bytes in every fourth; a few pieces
    are compressed once by xz and their streams repeated and
    concatenated."""
    rng = random.Random(seed)
    piece = 16 * MIB
    packed = []
    for kind in range(4):
        data = bytearray(piece)
        if kind:
            at = rng.randrange(0, piece - MIB)
            data[at:at + MIB] = rng.randbytes(MIB)
        raw = tmp / f"piece{kind}"
        raw.write_bytes(bytes(data))
        packed.append(xz(raw, tmp / f"piece{kind}.xz", "--block-size=16MiB").read_bytes())
        raw.unlink()
    with open(path, "wb") as out:
        for i in range(size // piece):
            out.write(packed[0] if i % 4 else packed[1 + (i // 4) % 3])
    return path


def test_peak_rss_full_read_of_4gib_image(mount, catalog, tmp_path, monkeypatch):
    if ASAN:
        # ASan keeps up to 256 MiB of freed memory in quarantine by default.
        monkeypatch.setenv("ASAN_OPTIONS", "quarantine_size_mb=8:"
                           + os.environ.get("ASAN_OPTIONS", ""))
    packed = make_big_xz(tmp_path / "big.img.xz", 4 * GIB, tmp_path)
    write_entry(catalog, "big.img", f"source = {packed}\n")
    m = mount(catalog, f"--memory-cache-size={CACHE // MIB}M")
    before = vm_hwm_kib(m.pid)
    subprocess.run(["dd", f"if={m.path / 'big.img'}", "of=/dev/null", "bs=1M",
                    "status=none"], check=True, timeout=scaled(600))
    peak = vm_hwm_kib(m.pid) * 1024
    print(f"peak RSS {peak / MIB:.1f} MiB (before reading {before / 1024:.1f} MiB), "
          f"bound {CACHE // MIB} MiB + {OVERHEAD // MIB} MiB")
    line = [x for x in m.status().splitlines() if x.startswith("memory-cache:")][0]
    assert int(line.split()[1]) <= CACHE
    assert " 256 blocks decoded" in line or int(line.split()[5]) >= 256
    assert peak < CACHE + OVERHEAD
