"""Memory stays bounded with many xz entries over HTTP read at once:
ten entries, each its own URL on a real nginx, read concurrently from
start to end, keep the daemon's peak RSS (VmHWM) under
--memory-cache-size plus a fixed overhead (issue 14).  The decoded
blocks of all entries share one cache and the fetched chunks of all
entries one engine budget (a quarter of --memory-cache-size, taken out
of the blocks' share, so both stay within the option); what is left is
the daemon's baseline, the decoders' dictionaries and input buffers,
and each entry's block index."""

import os
import shutil

import pytest

from peers import sha256, sha256_all_at_once, write_entry
from xz_helpers import make_image, xz

MIB = 1 << 20
CACHE = 64 * MIB
ENTRIES = 10
ASAN = "asan" in os.environ.get("DISKSHELF_BIN", "")
# Issue 14's target is --memory-cache-size + 64 MiB, asserted as is.
# The engine's chunk budget is taken out of the decoded-block cache's
# bound and malloc keeps two arenas: peaks of 85 to 95 MiB over five
# runs (main before: 112 to 123).  Sanitizer builds carry shadow memory
# on top.
OVERHEAD = (160 if ASAN else 64) * MIB


@pytest.mark.parametrize("cache_dir", ["none", "disk"])
def test_ten_xz_entries_over_http_read_at_once_stay_within_the_bound(
        mount, catalog, nginx, tmp_path, monkeypatch, cache_dir):
    """160 MiB decoded in all, two and a half times the decoded-block cache: the
    peak stays under --memory-cache-size + 64 MiB and every entry reads
    right."""
    if ASAN:
        # ASan keeps up to 256 MiB of freed memory in quarantine by default.
        monkeypatch.setenv("ASAN_OPTIONS", "quarantine_size_mb=8:"
                           + os.environ.get("ASAN_OPTIONS", ""))
    original = make_image(tmp_path / "orig.img", 16 * MIB, seed=14)
    packed = xz(original, tmp_path / "orig.img.xz", "-T2", "--block-size=4MiB")
    # One compressed file under ten names: ten URLs, so ten sources whose
    # decoded blocks are not shared, cheap to make.
    for i in range(ENTRIES):
        shutil.copyfile(packed, nginx.root / f"d{i}.img.xz")
        write_entry(catalog, f"d{i}.img", f"source = {nginx.url(f'd{i}.img.xz')}\n")
    args = [f"--memory-cache-size={CACHE // MIB}M"]
    if cache_dir == "none":
        args.append("--cache-dir=none")
    else:
        args.append(f"--cache-dir={tmp_path / 'diskcache'}")
    m = mount(catalog, *args)
    sums, before, peak = sha256_all_at_once(
        [m.path / f"d{i}.img" for i in range(ENTRIES)], m.pid)
    print(f"peak RSS {peak / MIB:.1f} MiB (before reading {before / MIB:.1f} MiB), "
          f"bound {CACHE // MIB} MiB + {OVERHEAD // MIB} MiB")
    assert sums == [sha256(original)] * ENTRIES
    line = [x for x in m.status().splitlines() if x.startswith("memory-cache:")][0]
    used, bound = int(line.split()[1]), int(line.split()[3])
    # The blocks get what the engine's quarter leaves.
    assert bound == CACHE - CACHE // 4, line
    assert used <= bound
    assert peak <= CACHE + OVERHEAD, peak / MIB
