"""SIGTERM and SIGINT end a busy daemon, every time.

Two defects made the daemon ignore them.  The one CI hit: the main thread,
once the FUSE loop ended, joined the thread that raises the mount's
read-ahead; that thread waits in stat() of the mountpoint for FUSE's INIT,
and a signal that came first left it waiting for an answer nobody would
give (the stack showed the main thread in pthread_join and the other in
request_wait_answer).  The other: a process-directed signal goes to any
one thread that does not block it, and libfuse's handler only sets a flag
that the main thread notices when its wait is interrupted; a signal taken
by a helper thread (a decode worker, the catalog watcher, an HTTP fetcher,
a captive server's monitor) is lost.  Only the main thread may take
termination signals."""

import os
import signal
import subprocess
import time

import pytest

from conftest import is_mounted
from nbd_helpers import NbdServer
from peers import make_random_file, scaled, stop_process, wait_for, write_entry
from xz_helpers import xz

TERMINATION = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM)


def blocked_signals(pid, tid):
    """The set of signal numbers a thread blocks, from /proc."""
    with open(f"/proc/{pid}/task/{tid}/status") as f:
        for line in f:
            if line.startswith("SigBlk:"):
                mask = int(line.split()[1], 16)
                return {n for n in range(1, 65) if mask & (1 << (n - 1))}
    raise AssertionError(f"no SigBlk for thread {tid}")


def thread_names(pid):
    """{tid: comm} of every thread of a process."""
    names = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                names[int(tid)] = f.read().strip()
        except FileNotFoundError:
            pass
    return names


@pytest.fixture
def sources(tmp_path, nginx):
    """A catalog over every kind of source that starts helper threads:
    local, HTTP (fetchers, storer), xz (decode workers), NBD (a reader
    thread per connection) and a captive nbdkit (a monitor thread)."""
    local = tmp_path / "local.img"
    make_random_file(local, 8 << 20, seed=1)
    raw = tmp_path / "xzsrc.img"
    make_random_file(raw, 8 << 20, seed=2)
    xz(raw, tmp_path / "x.img.xz", "--block-size=1MiB", "-0")
    make_random_file(nginx.root / "http.img", 8 << 20, seed=3)
    nbd = NbdServer("nbdkit", local, tmp_path / "nbd")
    nbd.start()
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    write_entry(catalog, "local.img", f"source = {local}\n")
    write_entry(catalog, "xz.img", f"source = {tmp_path / 'x.img.xz'}\n")
    write_entry(catalog, "http.img", f"source = {nginx.url('http.img')}\n")
    write_entry(catalog, "nbd.img", f"source = {nbd.uri()}\n")
    write_entry(catalog, "captive.img",
                "command = nbdkit --exit-with-parent memory 8M\n")
    yield catalog
    nbd.stop()


def start_readers(mountpoint):
    """dd processes reading every entry with O_DIRECT, and buffered."""
    readers = []
    for name in ("local.img", "xz.img", "http.img", "nbd.img", "captive.img"):
        for flag in ("iflag=direct", "iflag=fullblock"):
            readers.append(subprocess.Popen(
                ["dd", f"if={mountpoint / name}", "of=/dev/null", "bs=64k", flag],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True))
    return readers


def stop_readers(readers):
    for r in readers:
        stop_process(r, timeout=10, sig=signal.SIGKILL)


def test_only_the_main_thread_takes_termination_signals(mount, sources):
    m = mount(sources)
    for name in ("local.img", "xz.img", "http.img", "nbd.img", "captive.img"):
        with open(m.path / name, "rb") as f:
            f.read(1 << 20)
    names = thread_names(m.pid)
    assert len(names) > 5, names
    takers = {tid: names[tid] for tid in names
              if tid != m.pid and not set(TERMINATION) <= blocked_signals(m.pid, tid)}
    assert not takers, f"helper threads that may take SIGTERM/SIGINT: {takers}"
    assert not blocked_signals(m.pid, m.pid) & {signal.SIGINT, signal.SIGTERM}


def test_busy_daemon_exits_on_every_signal(mount, sources):
    """50 times: readers on every source kind, then SIGTERM or SIGINT,
    while the reads are in flight or just after they ended (helper threads
    still alive, no FUSE request left to wake a worker); the daemon exits 0
    within seconds and the mount is gone."""
    for i in range(50):
        sig = signal.SIGTERM if i % 2 == 0 else signal.SIGINT
        m = mount(sources, name=f"mnt{i % 2}")
        if i % 5 == 4:
            # At once, before the kernel has finished FUSE's INIT: the
            # thread raising the mount's read-ahead still waits in stat().
            os.kill(m.pid, sig)
        readers = start_readers(m.path)
        try:
            time.sleep(0.05 * (i % 5))
            if i % 4 >= 2:
                stop_readers(readers)
            if i % 5 != 4:
                os.kill(m.pid, sig)
            try:
                m.proc.wait(timeout=scaled(10))
            except subprocess.TimeoutExpired:
                raise AssertionError(f"try {i}: the daemon ignored {sig.name}:\n{m.log()[-3000:]}")
            assert m.proc.returncode == 0, f"try {i}: exit {m.proc.returncode}:\n{m.log()[-3000:]}"
            wait_for(lambda: not is_mounted(m.path), scaled(10), "the mount to go")
        finally:
            stop_readers(readers)
            m.unmount()
