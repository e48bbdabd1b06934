#!/usr/bin/python3
"""Readers for bench/bench_torrent.sh; every byte read is checked
against the source file.

  torrent_reads.py random FILE SOURCE READERS SECONDS SEED
      READERS threads pread 4 KiB at random 4 KiB-aligned offsets for
      SECONDS seconds; prints "READS WRONG ERRORS SECONDS" (reads that
      returned the right bytes, wrong bytes, failed reads).

  torrent_reads.py seq FILE SOURCE PROGRESS
      reads FILE from the start in 1 MiB reads, writing the bytes read so
      far into PROGRESS after each read; at the end prints one line:
      "completed BYTES", "error ERRNO-NAME BYTES" or "wrong BYTES".
      The caller times it (it may be killed while blocked in a read).
"""
import errno
import os
import random
import sys
import threading
import time

BLOCK = 4096
CHUNK = 1 << 20


def random_reads(path, source, readers, seconds, seed):
    size = os.path.getsize(source)
    blocks = size // BLOCK
    fd = os.open(path, os.O_RDONLY)
    sfd = os.open(source, os.O_RDONLY)
    counts = [[0, 0, 0] for _ in range(readers)]   # good, wrong, errors
    t0 = time.monotonic()
    deadline = t0 + seconds

    def reader(k):
        rng = random.Random(seed * 1000 + k)
        c = counts[k]
        while time.monotonic() < deadline:
            off = rng.randrange(blocks) * BLOCK
            try:
                got = os.pread(fd, BLOCK, off)
            except OSError as e:
                c[2] += 1
                print(f"reader {k}: pread at {off}: {e} after "
                      f"{time.monotonic() - t0:.2f} s", file=sys.stderr)
                continue
            if got == os.pread(sfd, BLOCK, off):
                c[0] += 1
            else:
                c[1] += 1

    threads = [threading.Thread(target=reader, args=(k,))
               for k in range(readers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - t0
    print(sum(c[0] for c in counts), sum(c[1] for c in counts),
          sum(c[2] for c in counts), f"{took:.2f}")


def seq_read(path, source, progress):
    done = 0
    with open(path, "rb", buffering=0) as f, open(source, "rb") as s:
        while True:
            try:
                got = f.read(CHUNK)
            except OSError as e:
                print("error", errno.errorcode.get(e.errno, e.errno), done)
                return
            if not got:
                break
            if got != s.read(len(got)):
                print("wrong", done)
                return
            done += len(got)
            with open(progress + ".tmp", "w") as p:
                p.write(str(done))
            os.replace(progress + ".tmp", progress)
    print("completed", done)


def main():
    if sys.argv[1] == "random":
        random_reads(sys.argv[2], sys.argv[3], int(sys.argv[4]),
                     float(sys.argv[5]), int(sys.argv[6]))
    elif sys.argv[1] == "seq":
        seq_read(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
