"""More sequential readers than decoded blocks fit in memory (issue 14):
ten xz entries, each its own file (so no blocks are shared), read at
once through a decoded-block cache that holds four of their blocks.
The readers take turns with the blocks they are in instead of evicting
each other's between two reads, so each block is decoded about once
(before: about one 4 MiB decode per kernel read, several hundred in
all).  Counted from `diskshelf status`, not timed."""

import shutil

from peers import sha256, sha256_all_at_once, write_entry
from xz_helpers import blocks, make_image, xz

MIB = 1 << 20
ENTRIES = 10
CACHE = 16 * MIB            # four 4 MiB blocks: fewer than the readers


def status_fields(m, key):
    """The words after `key:` in the daemon's status."""
    line = [x for x in m.status().splitlines() if x.startswith(key + ":")][0]
    return line.split()[1:]


def test_ten_readers_over_a_small_cache_decode_each_block_about_once(
        mount, catalog, tmp_path):
    original = make_image(tmp_path / "orig.img", 16 * MIB, seed=141)
    packed = xz(original, tmp_path / "orig.img.xz", "-T2", "--block-size=4MiB")
    needed = ENTRIES * len(blocks(packed))
    for i in range(ENTRIES):
        copy = tmp_path / f"d{i}.img.xz"
        shutil.copyfile(packed, copy)
        write_entry(catalog, f"d{i}.img", f"source = {copy}\n")
    m = mount(catalog, f"--memory-cache-size={CACHE // MIB}M")

    sums, _, _ = sha256_all_at_once([m.path / f"d{i}.img" for i in range(ENTRIES)], m.pid)

    assert sums == [sha256(original)] * ENTRIES
    cache = status_fields(m, "memory-cache")
    used, decoded, evictions = int(cache[0]), int(cache[4]), int(cache[13])
    waits = status_fields(m, "memory-cache-waits")
    print(f"{decoded} blocks decoded for {needed}, {evictions} evictions; "
          f"memory-cache-waits: {' '.join(waits)}")
    # Every block once, and a little slack for a reader that paused for
    # longer than a hold lasts (a loaded machine, a sanitizer build).
    assert needed <= decoded <= needed + needed // 10
    assert int(waits[0]) > 0            # they did take turns
    assert used <= CACHE
