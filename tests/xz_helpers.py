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


def vm_hwm_kib(pid):
    """Peak resident set size of a process, in KiB (VmHWM)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM")

