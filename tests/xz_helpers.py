"""Helpers for the xz tests: test images that compress quickly, xz files
made on the fly with the real xz tool in every shape the layer must
handle, and the block table `xz --list --robot` reports."""

import os
import pathlib
import random
import subprocess

from peers import run


def make_image(path, size, seed=1):
    """An image of `size` bytes: runs of random bytes, zeroes and text, so
    that xz has real work but compresses it quickly."""
    rng = random.Random(seed)
    text = b"".join(b"line %d of some text in the image\n" % i for i in range(2000))
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, rng.choice([4096, 65536, 262144]))
            kind = rng.randrange(3)
            if kind == 0:
                chunk = rng.randbytes(n)
            elif kind == 1:
                chunk = bytes(n)
            else:
                chunk = (text * (n // len(text) + 1))[:n]
            f.write(chunk)
            left -= n
    return pathlib.Path(path)


def xz(src, dst, *args):
    """Compress src into dst with `xz -c ARGS` (preset -0 unless given)."""
    args = list(args)
    if not any(a.startswith("-") and a[1:].isdigit() for a in args):
        args.insert(0, "-0")
    with open(dst, "wb") as out:
        subprocess.run(["xz", "-c", *args, str(src)], stdout=out, check=True, timeout=300)
    return pathlib.Path(dst)


def blocks(path):
    """The blocks of an xz file: dicts with stream, number, coffset,
    uoffset, ctotal, usize (from xz --list --robot -vv)."""
    out = run(["xz", "--list", "--robot", "-vv", str(path)]).stdout.decode()
    rows = []
    for line in out.splitlines():
        f = line.split("\t")
        if f[0] == "block":
            rows.append({"stream": int(f[1]), "number": int(f[3]), "coffset": int(f[4]),
                         "uoffset": int(f[5]), "ctotal": int(f[6]), "usize": int(f[7])})
    return rows


def pread(path, offset, count):
    """Read count bytes at offset with one pread (raises OSError)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, count, offset)
    finally:
        os.close(fd)





# -- hand-made xz files for the hostile-input tests ----------------------
# Layout from xz-file-format.txt: stream header (2.1.1), index (4),
# stream footer (2.1.2), block header (3.1).

XZ_MAGIC = b"\xfd7zXZ\x00"


def _crc32(data):
    import zlib
    return zlib.crc32(data).to_bytes(4, "little")


def _vli(n):
    """An xz variable-length integer."""
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def stream_header(check=0):
    flags = bytes([0, check])
    return XZ_MAGIC + flags + _crc32(flags)


def stream_footer(index_size, check=0):
    flags = bytes([0, check])
    body = (index_size // 4 - 1).to_bytes(4, "little") + flags
    return _crc32(body) + body + b"YZ"


def index_bytes(records):
    """The index of a stream: records is a list of (unpadded size,
    uncompressed size), or a (count, unpadded, uncompressed) tuple for
    `count` equal records (built without a Python list per record)."""
    if isinstance(records, tuple):
        count, unpadded, usize = records
        body = b"\x00" + _vli(count) + (_vli(unpadded) + _vli(usize)) * count
    else:
        body = b"\x00" + _vli(len(records)) + b"".join(_vli(u) + _vli(s) for u, s in records)
    body += b"\x00" * (-len(body) % 4)
    return body + _crc32(body)


def many_records_xz(path, count):
    """One stream whose index lists `count` blocks of 1 byte (unpadded
    size 8, so each takes 8 bytes of the file).  The blocks are never
    read when the index is refused, so their bytes are a hole: the file
    is sparse, its index is about 3 bytes per record."""
    index = index_bytes((count, 8, 1))
    with open(path, "wb") as f:
        f.write(stream_header())
        f.seek(12 + 8 * count)
        f.write(index + stream_footer(len(index)))
    return pathlib.Path(path)


def many_streams_xz(path, count):
    """`count` empty streams back to back (32 bytes each)."""
    index = index_bytes([])
    one = stream_header() + index + stream_footer(len(index))
    with open(path, "wb") as f:
        for _ in range(count // 4096):
            f.write(one * 4096)
        f.write(one * (count % 4096))
    return pathlib.Path(path)


def zero_padded_object(path, size):
    """`size` bytes: the xz magic, then zeros (a hole): what the index
    reader sees as a huge run of stream padding."""
    with open(path, "wb") as f:
        f.write(stream_header())
        f.truncate(size)
    return pathlib.Path(path)


def set_dictionary(packed, out, dict_byte):
    """Copy a one-stream, LZMA2-only xz file with its first block header
    declaring another dictionary size (dict_byte: the LZMA2 property
    byte, 40 = 4 GiB - 1), with the header's CRC32 fixed up."""
    raw = bytearray(pathlib.Path(packed).read_bytes())
    start = 12
    size = (raw[start] + 1) * 4
    header = raw[start:start + size - 4]
    flags = header[1]
    pos = 2
    for present in (flags & 0x40, flags & 0x80):   # compressed, uncompressed size
        if present:
            while header[pos] & 0x80:
                pos += 1
            pos += 1
    assert header[pos] == 0x21 and header[pos + 1] == 1, "not an LZMA2 block"
    header[pos + 2] = dict_byte
    raw[start:start + size] = header + _crc32(bytes(header))
    pathlib.Path(out).write_bytes(bytes(raw))
    return pathlib.Path(out)
