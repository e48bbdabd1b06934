#!/usr/bin/python3
"""Soak under faults: parallel readers over every source kind at once while
servers die, stall and fail, the catalog changes and the disk cache fills.

Every byte read is compared with the source.  A read may fail (EIO and the
like) while a fault lasts; it must never return wrong bytes.  At the end
the faults stop, every entry must read whole and right again, and the
figures are printed:

    reads, bytes, faults injected, wrong bytes (must be 0), read errors,
    daemon RSS after warm-up and at the end, leaks (ASan build: must be 0)

    /usr/bin/python3 tests/soak/soak.py [--minutes N] [--bin build-asan/diskshelf]

tests/test_soak.py runs a short version in the suite.  Everything runs on
loopback: nginx, nbdkit (error filter, killed and restarted), a captive
qemu-nbd."""

import argparse
import errno
import hashlib
import json
import mmap
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from conftest import Mount, is_mounted  # noqa: E402
from nbd_helpers import NbdServer  # noqa: E402
from peers import Nginx, make_random_file, run, scaled, wait_for, write_entry  # noqa: E402

MiB = 1 << 20


def nginx_faults(flag_503, flag_stall):
    """Server-block text: /f/NAME serves NAME, answers 503 while flag_503
    exists and trickles one byte a second while flag_stall exists."""
    return f"""
        location /f/ {{
            if (-f {flag_503}) {{
                return 503;
            }}
            if (-f {flag_stall}) {{
                set $limit_rate 1;
            }}
            alias ROOT/;
        }}
"""


def xz_to(src, dst):
    """xz src into dst in 1 MiB blocks."""
    with open(dst, "wb") as out:
        subprocess.run(["xz", "-T1", "-0", "--block-size=1MiB", "-c", str(src)],
                       stdout=out, check=True, timeout=scaled(120))


class Soak:
    """The data, the peers, the daemon, the readers and the faults."""

    def __init__(self, binary, workdir, seconds, readers=6, seed=1, log=print, faults=None):
        self.binary = pathlib.Path(binary)
        self.dir = pathlib.Path(workdir)
        self.seconds = seconds
        self.readers = readers
        self.seed = seed
        self.rng = random.Random(seed)
        self.log = log
        self.expected = {}          # entry name -> bytes it must read as
        self.alternatives = {}      # churned entry -> [bytes, bytes]
        self.stats = {"reads": 0, "bytes": 0, "wrong": 0, "errors": 0,
                      "errors_before_faults": 0, "faults": {}, "error_kinds": {},
                      "nbd_term_seconds": []}
        self.faults_started = False
        self.wrong = []
        self.lock = threading.Lock()
        self.nbd_lock = threading.Lock()
        self.stop = threading.Event()
        self.nginx = self.nbd = self.mount = None
        self.fault_kinds = faults or ["nbd-kill", "nbd-term", "http-503", "http-stall",
                                      "nbd-error", "churn-edit", "entry-add-remove", "sighup"]

    # -- data and peers -------------------------------------------------
    def make_data(self):
        d = self.dir
        d.mkdir(parents=True, exist_ok=True)
        self.nginx = Nginx(d / "nginx")
        www = self.nginx.root
        self.flag_503 = d / "flag-503"
        self.flag_stall = d / "flag-stall"
        self.flag_nbd_error = d / "flag-nbd-error"
        self.nginx.set_extra(nginx_faults(self.flag_503, self.flag_stall)
                             .replace("ROOT", str(www)))

        def image(path, size, seed, zero_share=0.5):
            # Half random, half zero runs: like a VM image, and xz-friendly.
            rng = random.Random(seed)
            out = bytearray(size)
            for off in range(0, size, 256 * 1024):
                if rng.random() >= zero_share:
                    out[off:off + 256 * 1024] = rng.randbytes(min(256 * 1024, size - off))
            pathlib.Path(path).write_bytes(out)
            return bytes(out)

        self.expected["local.img"] = image(d / "local.img", 16 * MiB, 1)
        self.expected["http.img"] = image(www / "http.img", 16 * MiB, 2)
        data = image(d / "httpxz.img", 16 * MiB, 3)
        xz_to(d / "httpxz.img", www / "httpxz.img.xz")
        self.expected["httpxz.img"] = data
        members = d / "members"
        members.mkdir(exist_ok=True)
        self.expected["tarxz-a.img"] = image(members / "a.img", 5 * MiB + 512, 4)
        self.expected["tarxz-b.img"] = image(members / "b.img", 7 * MiB, 5)
        run(["tar", "--format=gnu", "-cf", str(d / "m.tar"), "-C", str(members), "a.img", "b.img"])
        xz_to(d / "m.tar", www / "m.tar.xz")
        self.expected["nbd.img"] = image(d / "nbd.img", 16 * MiB, 6)
        self.expected["captive.img"] = image(d / "captive.raw", 8 * MiB, 7)
        run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(d / "captive.raw"),
             str(d / "captive.qcow2")])
        self.alternatives["churn.img"] = [image(d / "churn-a.img", 4 * MiB, 8),
                                          image(d / "churn-b.img", 4 * MiB, 9)]

    def start_peers(self):
        self.nginx.start()
        self.nbd = NbdServer("nbdkit", self.dir / "nbd.img", self.dir / "nbd",
                             extra_args=["--filter=error"])
        # The error filter's parameters follow the plugin's.
        self.nbd._nbdkit_argv_orig = self.nbd._nbdkit_argv
        self.nbd._nbdkit_argv = lambda: self.nbd._nbdkit_argv_orig() + [
            "error-pread-rate=100%", f"error-pread-file={self.flag_nbd_error}"]
        self.nbd.start()

    def write_catalog(self):
        cat = self.dir / "catalog"
        cat.mkdir(exist_ok=True)
        remote = "timeout = 3\nretry-time = 4\n"
        f = lambda name: self.nginx.url("f/" + name)  # noqa: E731
        write_entry(cat, "local.img", f"source = {self.dir / 'local.img'}\n")
        write_entry(cat, "http.img", f"source = {f('http.img')}\n{remote}")
        write_entry(cat, "httpxz.img", f"source = {f('httpxz.img.xz')}\n{remote}")
        write_entry(cat, "tarxz-a.img", f"source = {f('m.tar.xz')}\nentry = a.img\n{remote}")
        write_entry(cat, "tarxz-b.img", f"source = {f('m.tar.xz')}\nentry = b.img\n{remote}")
        write_entry(cat, "nbd.img", f"source = {self.nbd.uri()}\n{remote}")
        write_entry(cat, "captive.img",
                    f"command = qemu-nbd -f qcow2 {self.dir / 'captive.qcow2'}\n")
        write_entry(cat, "churn.img", f"source = {self.dir / 'churn-a.img'}\n")
        self.catalog = cat

    def start_daemon(self):
        mnt = self.dir / "mnt"
        mnt.mkdir(exist_ok=True)
        # A disk cache far smaller than the remote data: it fills and evicts
        # all the time; a small decoded-block cache likewise.
        self.mount = Mount(self.binary, self.catalog, mnt, self.dir / "daemon.log",
                           [f"--cache-dir={self.dir / 'cache'}", "--cache-size=24M",
                            "--memory-cache-size=16M"])
        wait_for(lambda: all((mnt / n).exists() for n in self.expected), scaled(60),
                 "every entry to appear")

    # -- readers ----------------------------------------------------------
    def count(self, key, n=1):
        with self.lock:
            self.stats[key] += n

    def record_error(self, name, e):
        kind = errno.errorcode.get(e.errno, str(e.errno)) if isinstance(e, OSError) else repr(e)
        with self.lock:
            self.stats["errors"] += 1
            if not self.faults_started:
                self.stats["errors_before_faults"] += 1
            k = f"{name}:{kind}"
            self.stats["error_kinds"][k] = self.stats["error_kinds"].get(k, 0) + 1

    def describe_wrong(self, name, offset, got):
        """Where wrong bytes came from, as far as can be told."""
        want = (self.expected.get(name) or self.alternatives[name][0])[offset:offset + len(got)]
        first = next((i for i in range(len(got)) if got[i] != want[i]), len(got))
        what = "zeros" if not any(got[first:first + 4096]) else "data"
        source = self.expected.get(name)
        found = source.find(got[first:first + 64]) if source and what == "data" else -1
        return {"entry": name, "offset": offset, "length": len(got),
                "first_wrong_byte": offset + first, "wrong_bytes_are": what,
                "they_are_at_offset": found}

    def check(self, name, offset, got):
        if name in self.alternatives:
            good = any(alt[offset:offset + len(got)] == got for alt in self.alternatives[name])
        else:
            good = self.expected[name][offset:offset + len(got)] == got
        if not good:
            with self.lock:
                self.stats["wrong"] += 1
                if len(self.wrong) < 20:
                    self.wrong.append(self.describe_wrong(name, offset, got))
        with self.lock:
            self.stats["reads"] += 1
            self.stats["bytes"] += len(got)

    def read_once(self, rng):
        names = list(self.expected) + list(self.alternatives)
        name = rng.choice(names)
        size = len(self.expected.get(name) or self.alternatives[name][0])
        direct = rng.random() < 0.5
        path = self.mount.path / name
        flags = os.O_RDONLY | (os.O_DIRECT if direct else 0)
        buf = mmap.mmap(-1, MiB)
        try:
            fd = os.open(path, flags)
        except OSError as e:
            self.record_error(name, e)
            return
        try:
            if rng.random() < 0.5:
                # Sequential: 1-4 MiB in 64 KiB..1 MiB pieces.
                piece = rng.choice([64 * 1024, 256 * 1024, MiB])
                offset = rng.randrange(0, size, piece) if size > piece else 0
                end = min(size, offset + rng.randint(1, 4) * MiB)
                while offset < end and not self.stop.is_set():
                    n = os.preadv(fd, [memoryview(buf)[:piece]], offset)
                    if n <= 0:
                        break
                    self.check(name, offset, bytes(buf[:n]))
                    offset += n
            else:
                for _ in range(16):
                    offset = rng.randrange(0, size // 4096) * 4096
                    n = os.preadv(fd, [memoryview(buf)[:4096]], offset)
                    self.check(name, offset, bytes(buf[:n]))
        except OSError as e:
            self.record_error(name, e)
        finally:
            os.close(fd)
            buf.close()

    def reader(self, seed):
        rng = random.Random(seed)
        while not self.stop.is_set():
            self.read_once(rng)

    # -- faults -----------------------------------------------------------
    def fault(self, name):
        with self.lock:
            self.stats["faults"][name] = self.stats["faults"].get(name, 0) + 1

    def flag_for(self, path, seconds):
        path.write_text("on")
        self.stop.wait(seconds)
        path.unlink(missing_ok=True)

    def injector(self, seed):
        """Inject faults until stopped; an exception of the harness itself
        (a peer that will not restart) is recorded, not lost."""
        try:
            self.inject(seed)
        except Exception as e:  # noqa: BLE001
            with self.lock:
                self.stats["injector_error"] = repr(e)

    def inject(self, seed):
        rng = random.Random(seed)
        extra = 0
        # Every kind once first (in a random order), so that even the
        # suite's short run injects each of them; then at random.
        first = list(self.fault_kinds)
        rng.shuffle(first)
        while not self.stop.wait(rng.uniform(0.5, 2.0)):
            which = first.pop() if first else rng.choice(self.fault_kinds)
            self.fault(which)
            if which in ("nbd-kill", "nbd-term"):
                with self.nbd_lock:
                    t0 = time.monotonic()
                    self.nbd.stop(sig=signal.SIGKILL if which == "nbd-kill" else signal.SIGTERM)
                    if which == "nbd-term":
                        with self.lock:
                            self.stats["nbd_term_seconds"].append(round(time.monotonic() - t0, 2))
                    self.stop.wait(rng.uniform(0.2, 2.0))
                    self.nbd.start()
            elif which == "http-503":
                self.flag_for(self.flag_503, rng.uniform(0.5, 2.0))
            elif which == "http-stall":
                self.flag_for(self.flag_stall, rng.uniform(1.0, 3.0))
            elif which == "nbd-error":
                self.flag_for(self.flag_nbd_error, rng.uniform(0.3, 1.5))
            elif which == "churn-edit":
                src = rng.choice(["churn-a.img", "churn-b.img"])
                write_entry(self.catalog, "churn.img", f"source = {self.dir / src}\n")
            elif which == "entry-add-remove":
                extra += 1
                write_entry(self.catalog, f"extra/e{extra}.img", f"source = {self.dir / 'local.img'}\n")
                old = self.catalog / "extra" / f"e{extra - 1}.img.conf"
                old.unlink(missing_ok=True)
            elif which == "sighup":
                os.kill(self.mount.pid, signal.SIGHUP)

    # -- the run ----------------------------------------------------------
    def rss_kib(self):
        with open(f"/proc/{self.mount.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def final_check(self):
        """Faults over: every entry reads whole and right within a while
        (reconnect back-off, caches refilling)."""
        for flag in (self.flag_503, self.flag_stall, self.flag_nbd_error):
            flag.unlink(missing_ok=True)
        with self.nbd_lock:
            if (self.nbd.proc is None or self.nbd.proc.poll() is not None
                    or not self.nbd.ready()):
                self.nbd.stop(sig=signal.SIGKILL)
                self.nbd.start()
        failures = {}
        for name, data in self.expected.items():
            deadline = time.monotonic() + scaled(60)
            while True:
                try:
                    got = (self.mount.path / name).read_bytes()
                    if hashlib.sha256(got).digest() != hashlib.sha256(data).digest():
                        failures[name] = "wrong bytes after the faults"
                    break
                except OSError as e:
                    if time.monotonic() > deadline:
                        failures[name] = f"still failing after the faults: {e}"
                        break
                    time.sleep(0.5)
        return failures

    def run(self):
        self.make_data()
        self.start_peers()
        self.write_catalog()
        self.start_daemon()
        threads = [threading.Thread(target=self.reader, args=(self.seed * 1000 + i,), daemon=True)
                   for i in range(self.readers)]
        for t in threads:
            t.start()
        warm = min(10.0, self.seconds / 5)
        self.stop.wait(warm)
        rss_start = self.rss_kib()
        self.faults_started = True
        injector = threading.Thread(target=self.injector, args=(self.seed + 98,), daemon=True)
        injector.start()
        # RSS every 30 s, to tell caches filling up (it levels off) from
        # a leak (it keeps climbing).
        samples = [rss_start]
        end = time.monotonic() + self.seconds - warm
        while not self.stop.wait(max(0.0, min(30.0, end - time.monotonic()))):
            if time.monotonic() >= end:
                break
            samples.append(self.rss_kib())
        rss_end = self.rss_kib()
        samples.append(rss_end)
        self.stop.set()
        # A server being stopped gracefully may take its whole stop timeout.
        injector.join(scaled(90))
        for t in threads:
            t.join(scaled(60))
        stuck = sum(t.is_alive() for t in threads) + injector.is_alive()
        self.stop.clear()
        failures = self.final_check()
        code = self.mount.unmount()
        log = self.mount.log()
        leaks = log.count("ERROR: LeakSanitizer")
        sanitizer = sum(log.count(w) for w in ("AddressSanitizer", "runtime error:"))
        result = dict(self.stats, rss_start_kib=rss_start, rss_end_kib=rss_end,
                      rss_samples_mib=[kib >> 10 for kib in samples],
                      leaks=leaks, sanitizer_reports=sanitizer, exit_code=code,
                      stuck_threads=stuck, final_failures=failures,
                      wrong_examples=self.wrong)
        return result

    def cleanup(self):
        if self.mount is not None:
            self.mount.stop()
        if self.nbd is not None and self.nbd.proc is not None:
            self.nbd.stop()
        if self.nginx is not None and self.nginx.proc is not None:
            self.nginx.stop()


def soak(binary, workdir, seconds, **kw):
    """Run one soak; returns the figures (a dict).  Always stops everything."""
    s = Soak(binary, workdir, seconds, **kw)
    try:
        return s.run()
    finally:
        s.cleanup()


def summary(r):
    """The figures of one run as a block of lines, and whether it passed."""
    ok = (r["wrong"] == 0 and not r.get("injector_error") and r["leaks"] == 0
          and r["sanitizer_reports"] == 0 and r["exit_code"] == 0
          and not r["final_failures"] and not r["stuck_threads"])
    by_errno = {}
    for key, n in r["error_kinds"].items():
        kind = key.split(":", 1)[1]
        by_errno[kind] = by_errno.get(kind, 0) + n
    term = r["nbd_term_seconds"]
    lines = [
        f"reads:            {r['reads']}",
        f"bytes:            {r['bytes']} ({r['bytes'] / (1 << 30):.2f} GiB)",
        f"faults:           {sum(r['faults'].values())} "
        + " ".join(f"{k}={v}" for k, v in sorted(r["faults"].items())),
        f"wrong reads:      {r['wrong']}",
        f"read errors:      {r['errors']} "
        + " ".join(f"{k}={v}" for k, v in sorted(by_errno.items()))
        + f" (before any fault: {r['errors_before_faults']})",
        f"errors by entry:  " + " ".join(f"{k}={v}" for k, v in sorted(r["error_kinds"].items())),
        f"nbdkit SIGTERM:   {len(term)} stops"
        + (f", {min(term)}-{max(term)} s to exit" if term else ""),
        f"RSS:              {r['rss_start_kib'] >> 10} MiB after warm-up -> "
        f"{r['rss_end_kib'] >> 10} MiB at the end",
        f"RSS every 30 s:   " + " ".join(str(m) for m in r["rss_samples_mib"]) + " MiB",
        f"leaks:            {r['leaks']}",
        f"sanitizer:        {r['sanitizer_reports']} reports",
        f"daemon exit:      {r['exit_code']}",
        f"after the faults: " + ("every entry reads right" if not r["final_failures"]
                                 else str(r["final_failures"])),
        f"harness:          " + ("ok" if not r.get("injector_error") and not r["stuck_threads"]
                                 else f"injector {r.get('injector_error')}, "
                                      f"{r['stuck_threads']} stuck threads"),
        f"soak:             {'passed' if ok else 'FAILED'}",
    ]
    return "\n".join(lines), ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=5)
    ap.add_argument("--readers", type=int, default=6)
    ap.add_argument("--seed", type=int, default=1,
                    help="seed of the readers and of the fault sequence")
    ap.add_argument("--bin", default=os.environ.get("DISKSHELF_BIN", "build/diskshelf"))
    args = ap.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="diskshelf-soak-"))
    try:
        r = soak(os.path.abspath(args.bin), work, args.minutes * 60, readers=args.readers,
                 seed=args.seed)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(r, indent=2, sort_keys=True))
    text, ok = summary(r)
    print(f"\n-- soak summary ({args.minutes:g} min, {args.readers} readers, seed {args.seed}, "
          f"{os.path.basename(os.path.dirname(os.path.abspath(args.bin)))}) --")
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
