"""Hostile xz files cannot make the daemon take unbounded memory or read
forever: an index of millions of records, millions of streams, a block
header declaring a 4 GiB dictionary, a huge run of zero bytes read as
stream padding.  Each is refused with a message saying what and why,
and the daemon's peak RSS stays small.  The files are made by hand
(xz_helpers) in a few megabytes, most of them holes."""

import errno
import os

import pytest

from peers import vm_hwm_kib, write_entry
from xz_helpers import (many_records_xz, many_streams_xz, set_dictionary, xz,
                        zero_padded_object)

MIB = 1 << 20
ASAN = "asan" in os.environ.get("DISKSHELF_BIN", "")
# What the daemon may take while refusing such a file: its baseline plus
# the index memory bound (256 MiB) is far above this only when nothing
# bounds the index; sanitizer builds carry shadow memory on top.
PEAK_MAX = (400 if ASAN else 300) * MIB


def left_out(m, entry):
    """The log line saying why `entry` is not in the mount."""
    assert not (m.path / entry).exists()
    line = m.wait_log(rf"{entry}: left out of the mount: .*")
    return line.group(0)


def test_index_with_millions_of_records_is_refused(mount, catalog, tmp_path):
    # 8 million records: about 130 MiB inside liblzma and 320 MiB of
    # block table without a bound.
    bad = many_records_xz(tmp_path / "records.xz", 8_000_000)
    write_entry(catalog, "records", f"source = {bad}\n")
    m = mount(catalog)
    line = left_out(m, "records")
    assert "needs more than the limit of 256 MiB of memory" in line, line
    assert "--block-size" in line
    assert vm_hwm_kib(m.pid) * 1024 < PEAK_MAX


def test_a_million_streams_are_refused(mount, catalog, tmp_path):
    # 1.2 million empty streams (38 MiB): about 370 MiB inside liblzma
    # without a bound.
    bad = many_streams_xz(tmp_path / "streams.xz", 1_200_000)
    write_entry(catalog, "streams", f"source = {bad}\n")
    m = mount(catalog)
    line = left_out(m, "streams")
    assert "needs more than the limit of 256 MiB of memory" in line, line
    assert "streams read so far" in line
    assert vm_hwm_kib(m.pid) * 1024 < PEAK_MAX


def test_many_streams_within_the_bound_open(mount, catalog, tmp_path):
    """Ten thousand streams are fine (and combine in linear time)."""
    good = many_streams_xz(tmp_path / "streams.xz", 10_000)
    # Followed by one real stream, so the image is not empty.
    data = os.urandom(100_000)
    (tmp_path / "tail").write_bytes(data)
    tail = xz(tmp_path / "tail", tmp_path / "tail.xz").read_bytes()
    with open(good, "ab") as f:
        f.write(tail)
    write_entry(catalog, "ok", f"source = {good}\n")
    m = mount(catalog)
    assert (m.path / "ok").read_bytes() == data
    assert "xz-streams: 10001" in m.status()


@pytest.mark.parametrize("path", ["single-block", "multi-block"])
def test_dictionary_of_4_gib_is_refused(mount, catalog, tmp_path, path):
    zeros = tmp_path / "zeros"
    zeros.write_bytes(bytes(4 * MIB))
    packed = xz(zeros, tmp_path / "zeros.xz")
    bad = set_dictionary(packed, tmp_path / "dict4g.xz", 40)
    assert bad.stat().st_size < 1000
    write_entry(catalog, "dict", f"source = {bad}\n")
    # 4 MiB in one block: the single-block path below 4 MiB blocks.
    args = ["--max-block-size=1M"] if path == "single-block" else []
    m = mount(catalog, *args)
    assert f"{path} path" in m.log()
    fd = os.open(m.path / "dict", os.O_RDONLY)
    try:
        with pytest.raises(OSError) as e:
            os.pread(fd, 4096, 0)
        assert e.value.errno == errno.EIO
    finally:
        os.close(fd)
    line = m.wait_log(r"block 0 \(image bytes 0-4194303\): its decoder needs 4097 MiB of "
                      r"memory .*, more than the limit of 1024 MiB.*").group(0)
    assert "recompress" in line
    assert m.proc.poll() is None


def test_huge_zero_object_is_not_read_to_its_start(mount, catalog, tmp_path, nginx):
    """A 1 GiB object made of the xz magic and zero bytes: the index
    reader reads it back from the end as stream padding; it gives up
    after a few MiB, and says why."""
    zero_padded_object(nginx.root / "zeros.xz", 1 << 30)
    write_entry(catalog, "zeros", f"source = {nginx.url('zeros.xz')}\n")
    m = mount(catalog, "--cache-dir=none")
    line = left_out(m, "zeros")
    assert "MiB of zero bytes before offset" in line, line
    assert "stream padding longer than diskshelf accepts" in line
    assert nginx.bytes_sent("/zeros.xz") < 64 * MIB
