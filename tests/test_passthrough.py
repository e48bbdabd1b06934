"""FUSE passthrough on libfuse 3.14 (fs/passthrough.c), proven with the
tiny low-level server tests/tools/pt_serve: the kernel reads the backing
file itself, so the server receives no READ for a passthrough file; the
kernel's one-mode-per-inode rule is kept; a server without CAP_SYS_ADMIN
falls back to READs; and the kernel's rules on open flags with
passthrough (keep_cache fails the open, direct_io takes read() back)."""

import mmap
import os
import pathlib
import platform
import subprocess

import pytest

from conftest import ROOT, assert_clean_output, is_mounted
from peers import check_random_reads, scaled, stop_process, wait_for

SIZE = 8 << 20


def kernel_has_passthrough():
    major, minor = (int(x) for x in platform.release().split(".")[:2])
    return (major, minor) >= (6, 9)


def pt_serve_path():
    """pt_serve, next to the daemon under test (build/ or build-asan/)."""
    daemon = pathlib.Path(os.environ.get("DISKSHELF_BIN", ROOT / "build" / "diskshelf"))
    path = daemon.parent / "tests" / "pt_serve"
    assert path.exists(), f"{path} is not built"
    return path


class PtServe:
    """One pt_serve in the foreground, stopped by PID."""

    def __init__(self, tmp_path, *options):
        self.dir = tmp_path
        self.backing = tmp_path / "backing"
        self.marker = tmp_path / "complete"
        self.mnt = tmp_path / "mnt"
        self.mnt.mkdir()
        self.log_path = tmp_path / "pt_serve.log"
        self.data = os.urandom(SIZE)
        self.backing.write_bytes(self.data)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [str(pt_serve_path()), *options, str(self.backing), str(self.mnt),
                 str(self.marker)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        try:
            wait_for(lambda: self.proc.poll() is not None or "ready" in self.log(), 20,
                     "pt_serve to mount")
        except TimeoutError:
            self.stop()
            raise
        assert self.proc.poll() is None, f"pt_serve exited:\n{self.log()}"

    def log(self):
        return self.log_path.read_text(errors="replace")

    def stats(self):
        """The stats file as {"passthrough": 1, "reads pt": N, "opens pt":
        (PT, CACHED), "backing": N}."""
        out = {}
        for line in (self.mnt / "stats").read_text().splitlines():
            words = line.split()
            if words[0] in ("reads", "opens", "open-now"):
                values = tuple(int(w) for w in words[2:])
                out[f"{words[0]} {words[1]}"] = values[0] if len(values) == 1 else values
            else:
                out[words[0]] = int(words[1])
        return out

    def wait_released(self, name):
        """Wait until the server has seen every open of name released:
        RELEASE reaches it after close() returned, and an open that
        arrives before it is decided on the opens still counted."""
        wait_for(lambda: self.stats()[f"open-now {name}"] == (0, 0), 10,
                 f"the opens of {name} to be released")

    def wait_backing(self, count):
        """Wait until count backing files are registered (RELEASE, which
        puts them, reaches the server after close() returned)."""
        wait_for(lambda: self.stats()["backing"] == count, 10,
                 f"{count} registered backing files")

    def stop(self):
        try:
            if is_mounted(self.mnt):
                subprocess.run(["fusermount3", "-u", str(self.mnt)], capture_output=True,
                               timeout=scaled(30))
            self.proc.wait(timeout=scaled(20))
        except subprocess.TimeoutExpired:
            pass
        finally:
            code = stop_process(self.proc, timeout=20)
            if is_mounted(self.mnt):
                subprocess.run(["fusermount3", "-uz", str(self.mnt)], capture_output=True,
                               timeout=scaled(30))
        return code


@pytest.fixture
def pt_serve(tmp_path):
    """Factory: pt_serve(*options) -> PtServe; stopped and checked at
    teardown (clean exit, no sanitizer output)."""
    servers = []

    def make(*options):
        d = tmp_path / f"s{len(servers)}"
        d.mkdir()
        s = PtServe(d, *options)
        servers.append(s)
        return s

    yield make
    problems = []
    for s in servers:
        code = s.stop()
        log = s.log()
        try:
            assert_clean_output(log, "pt_serve")
        except AssertionError as e:
            problems.append(str(e))
        if code != 0:
            problems.append(f"pt_serve exit code {code}:\n{log[-2000:]}")
    assert not problems, "\n".join(problems)


@pytest.fixture
def server(pt_serve):
    if not kernel_has_passthrough():
        pytest.skip("FUSE passthrough needs Linux 6.9+")
    s = pt_serve()
    assert "FUSE passthrough on" in s.log(), s.log()
    assert s.stats()["passthrough"] == 1
    return s


def test_passthrough_file_gets_no_read(server):
    """The passthrough file reads right (sequentially, at random offsets,
    through mmap) and the server sees no READ for it; the same bytes
    served normally do cost READs."""
    assert (server.mnt / "pt").read_bytes() == server.data
    check_random_reads(server.mnt / "pt", server.data, count=50)
    with open(server.mnt / "pt", "rb") as f, \
            mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
        assert m[SIZE // 2:SIZE // 2 + 65536] == server.data[SIZE // 2:SIZE // 2 + 65536]
    assert (server.mnt / "normal").read_bytes() == server.data
    stats = server.stats()
    assert stats["reads pt"] == 0, stats
    assert stats["opens pt"][0] >= 3 and stats["opens pt"][1] == 0, stats
    assert stats["reads normal"] > 0, stats
    # Every open is released: the backing file is unregistered.
    server.wait_backing(0)


def test_one_registration_per_backing_file(server):
    """Two passthrough inodes over one backing file share one
    registration, dropped when the last open closes."""
    server.marker.touch()
    with open(server.mnt / "pt", "rb") as a, open(server.mnt / "late", "rb") as b:
        assert a.read(4096) == b.read(4096) == server.data[:4096]
        assert server.stats()["backing"] == 1
        assert server.stats()["lent"] == 1
    server.wait_backing(0)
    assert server.stats()["reads late"] == 0
    wait_for(lambda: server.stats()["lent"] == 0, 10, "the lend to be released")


def test_inode_keeps_one_io_mode(server):
    """While an inode has opens served with READs, a new open of it is
    served with READs too, even once it could go passthrough; once all
    are closed it goes passthrough; while it has a passthrough open,
    every new open is passthrough, even one that would have asked for
    READs.  Without this bookkeeping the kernel fails such opens with
    EIO (test_kernel_fails_mixed_opens)."""
    late = server.mnt / "late"
    with open(late, "rb") as first:
        assert first.read(65536) == server.data[:65536]
        server.marker.touch()           # the object is complete now
        with open(late, "rb") as second:
            second.seek(SIZE - 65536)
            assert second.read() == server.data[-65536:]
    stats = server.stats()
    assert stats["opens late"] == (0, 2), stats
    # The second open's lend was not used: released at once.
    assert stats["lent"] == 0, stats
    reads_before = stats["reads late"]
    assert reads_before > 0

    server.wait_released("late")
    with open(late, "rb") as third:
        assert server.stats()["lent"] == 1
        server.marker.unlink()          # no longer complete
        with open(late, "rb") as fourth:
            fourth.seek(SIZE // 3)
            assert fourth.read(1 << 20) == server.data[SIZE // 3:SIZE // 3 + (1 << 20)]
        assert third.read() == server.data
        # The fourth open lent nothing; the third's lend holds for both.
        assert server.stats()["lent"] == 1
    stats = server.stats()
    assert stats["opens late"] == (2, 2), stats
    assert stats["reads late"] == reads_before, stats
    server.wait_released("late")
    server.wait_backing(0)
    wait_for(lambda: server.stats()["lent"] == 0, 10, "the lend to be released")


def test_kernel_fails_mixed_opens(server):
    """The kernel's rule the bookkeeping keeps (fs/fuse/iomode.c): with
    a cached open, a passthrough open fails with EIO; with a passthrough
    open, a cached one fails with EIO, also when opened O_DIRECT."""
    unruly = server.mnt / "unruly"
    with open(unruly, "rb") as cached:
        cached.read(4096)
        server.marker.touch()
        with pytest.raises(OSError) as e:
            open(unruly, "rb").close()
        assert e.value.errno == 5
    with open(unruly, "rb") as passthrough:
        server.marker.unlink()
        with pytest.raises(OSError) as e:
            open(unruly, "rb").close()
        assert e.value.errno == 5
        with pytest.raises(OSError) as e:
            os.close(os.open(unruly, os.O_RDONLY | os.O_DIRECT))
        assert e.value.errno == 5
        assert passthrough.read() == server.data
    assert server.stats()["reads unruly"] <= 2


@pytest.mark.parametrize("when", ["before", "after"])
def test_without_sys_admin_reads_are_served(pt_serve, when):
    """A server without CAP_SYS_ADMIN cannot register backing files:
    known at INIT, passthrough stays off (one log line); found out at the
    first open, that open is served with READs (one warning).  Either
    way every byte reads right."""
    s = pt_serve("-c", when)
    if when == "before":
        assert "FUSE passthrough off" in s.log(), s.log()
        assert "CAP_SYS_ADMIN" in s.log() or not kernel_has_passthrough()
    s.marker.touch()
    assert (s.mnt / "pt").read_bytes() == s.data
    assert (s.mnt / "late").read_bytes() == s.data
    stats = s.stats()
    assert stats["reads pt"] > 0 and stats["opens pt"][0] == 0, stats
    if when == "after" and kernel_has_passthrough():
        assert s.log().count("registering a backing file") == 1, s.log()


@pytest.fixture
def server_with(pt_serve):
    """Factory: a pt_serve with -o FLAG (FOPEN_KEEP_CACHE or FOPEN_DIRECT_IO
    on every open reply), passthrough on."""
    if not kernel_has_passthrough():
        pytest.skip("FUSE passthrough needs Linux 6.9+")

    def make(flag):
        s = pt_serve("-o", flag)
        assert s.stats()["passthrough"] == 1
        return s
    return make


def test_keep_cache_fails_a_passthrough_open(server_with):
    """FOPEN_KEEP_CACHE is not among the flags the kernel takes with
    FOPEN_PASSTHROUGH: the open fails with EIO (so a passthrough reply
    must not carry it)."""
    s = server_with("keep_cache")
    with pytest.raises(OSError) as e:
        open(s.mnt / "pt", "rb").close()
    assert e.value.errno == 5
    assert (s.mnt / "normal").read_bytes() == s.data


def test_direct_io_takes_reads_back_from_passthrough(server_with):
    """FOPEN_DIRECT_IO with FOPEN_PASSTHROUGH: read() comes to the server
    as READs again, mmap still passes through.  Opens with direct_io do
    not count for the kernel's rule against a later passthrough open,
    but a direct_io open fails while a passthrough open exists."""
    s = server_with("direct_io")
    assert (s.mnt / "pt").read_bytes() == s.data
    reads = s.stats()["reads pt"]
    assert reads > 0
    with open(s.mnt / "pt", "rb") as f, \
            mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
        assert m[:] == s.data
    assert s.stats()["reads pt"] == reads

    unruly = s.mnt / "unruly"
    with open(unruly, "rb") as direct:
        assert direct.read(4096) == s.data[:4096]
        s.marker.touch()
        with open(unruly, "rb") as passthrough:
            assert passthrough.read(4096) == s.data[:4096]
            s.marker.unlink()
            with pytest.raises(OSError) as e:
                open(unruly, "rb").close()
            assert e.value.errno == 5
