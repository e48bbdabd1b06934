"""Building tar archives with the real `tar` for the tar layer tests, and
reading back what `tar -xO` says a member holds."""

import hashlib
import pathlib
import random
import re
import subprocess

from peers import run, scaled, make_random_file

# A name longer than 100 bytes in its last component alone: ustar cannot
# hold it, GNU needs a ././@LongLink record, pax a `path` record.
LONG_BASE = "disk-image-with-a-rather-long-name-" + "x" * 90 + ".img"
LONG_NAME = "images/2026/" + LONG_BASE
# Longer than 100 bytes but splittable into ustar's 155-byte prefix.
USTAR_LONG_NAME = "a" * 60 + "/" + "b" * 50 + "/split-name.img"


def write_random(path, size, seed):
    """size pseudo-random bytes (deterministic per seed)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return make_random_file(path, size, seed)


def write_sparse(path, size, chunks, seed):
    """A sparse file of `size` bytes with 64 KiB of random data at each
    offset in chunks (the rest holes): large but cheap."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(size)
        for off in chunks:
            f.seek(off)
            f.write(rng.randbytes(min(65536, size - off)))
    return path


def tar_create(archive, directory, names, fmt, extra=(), sparse_output=False):
    """Run the real tar in `directory` to make `archive` of `names` in
    format fmt.  With sparse_output the archive is written through
    `dd conv=sparse`, so long zero runs become holes on disk."""
    argv = ["tar", f"--format={fmt}", *extra, "-cf", "-", "-C", str(directory), *names]
    with open(archive, "wb") as out:
        if not sparse_output:
            subprocess.run(argv, stdout=out, check=True, timeout=scaled(120))
        else:
            tar = subprocess.Popen(argv, stdout=subprocess.PIPE)
            subprocess.run(["dd", "bs=4096", "conv=sparse", "status=none"],
                           stdin=tar.stdout, stdout=out, check=True, timeout=scaled(120))
            tar.stdout.close()
            assert tar.wait(timeout=scaled(60)) == 0
    return pathlib.Path(archive)


def tar_member_sha256(archive, member):
    """sha256 of `tar -xOf archive member`, streamed."""
    h = hashlib.sha256()
    p = subprocess.Popen(["tar", "-xOf", str(archive), member], stdout=subprocess.PIPE)
    while True:
        b = p.stdout.read(1 << 20)
        if not b:
            break
        h.update(b)
    p.stdout.close()
    assert p.wait(timeout=scaled(120)) == 0, f"tar -xO {member} failed"
    return h.hexdigest()


def tar_member_names(archive):
    """The names `tar -tf` lists."""
    return run(["tar", "-tf", archive]).stdout.decode().splitlines()


def huge_member_archive(workdir, fmt, size):
    """An archive whose first member `huge.img` is `size` bytes (beyond
    what ustar's 11 octal digits hold, so pax writes a `size` record and
    GNU a base-256 number) followed by `after.bin`.

    The headers come from the real tar: it is run on a sparse file and
    stopped after its first 64 KiB of output; the member's data is then a
    hole (plus two markers) and the rest is tar's own archive of
    after.bin, so nothing ever writes gigabytes.  Returns (archive path,
    after.bin path)."""
    workdir = pathlib.Path(workdir)
    src = workdir / f"huge-src-{fmt}"
    src.mkdir(parents=True, exist_ok=True)
    huge = src / "huge.img"
    with open(huge, "wb") as f:
        f.truncate(size)
        f.write(b"HEADMARK")
        f.seek(size - 8)
        f.write(b"TAILMARK")
    after = write_random(src / "after.bin", 5000, seed=77)
    tar = subprocess.Popen(["tar", f"--format={fmt}", "-cf", "-", "-C", str(src), "huge.img"],
                           stdout=subprocess.PIPE)
    head = tar.stdout.read(65536)
    tar.stdout.close()
    tar.kill()
    tar.wait(timeout=scaled(30))
    data_start = head.index(b"HEADMARK")
    assert data_start % 512 == 0
    second = subprocess.run(["tar", f"--format={fmt}", "-cf", "-", "-C", str(src), "after.bin"],
                            stdout=subprocess.PIPE, check=True).stdout
    archive = workdir / f"huge-{fmt}.tar"
    padded = (size + 511) // 512 * 512
    with open(archive, "wb") as f:
        f.write(head[:data_start + 8])
        f.seek(data_start + size - 8)
        f.write(b"TAILMARK")
        f.seek(data_start + padded)
        f.write(second)
    return archive, after


def status_section(text, name):
    """The "key: value" lines of one entry in `diskshelf status` output."""
    out, current = {}, None
    for line in text.splitlines():
        m = re.match(r"^\[(.*)\]$", line)
        if m:
            current = m.group(1)
            continue
        if current == name and ": " in line:
            k, v = line.split(": ", 1)
            out[k] = v
    return out

