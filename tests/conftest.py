"""The pytest harness: the built daemon, temporary catalogs, mounts that
are always unmounted and stopped by PID, and shared peers (test CA,
nginx).  Fixture API:

    diskshelf            path of the binary (DISKSHELF_BIN or build/diskshelf)
    catalog              an empty catalog directory (pathlib.Path)
    mount(catalog, *args, expect_entries=None) -> Mount
    test_ca              a session-wide TestCA (certtool)
    nginx                a started Nginx with HTTP and HTTPS (test_ca)
    background           env + checker for daemons started in the background

Helpers: assert_clean_output(text) fails on sanitizer or crash lines.
As root, the suite runs in a network namespace of its own whose only
interface is lo (see pytest_configure): nothing a test starts can send
traffic off the machine.
pytest's per-test timeout (pytest.ini) is scaled like every other wait.
"""

import ctypes
import os
import pathlib
import re
import signal
import subprocess

import pytest

from peers import SLOW, Nginx, TestCA, scaled, stop_process, wait_for

CLONE_NEWNET = 0x40000000


def pytest_configure(config):
    """Enter a network namespace with only lo up, before any peer starts:
    the torrent clients (DHT, LSD, multicast), nginx and the NBD servers
    then cannot reach anything but loopback, whatever their flags.  Needs
    root; DISKSHELF_TEST_HOST_NET=1 keeps the host's network."""
    if os.geteuid() != 0 or os.environ.get("DISKSHELF_TEST_HOST_NET"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise pytest.UsageError(f"unshare(CLONE_NEWNET): {os.strerror(err)}"
                                " (DISKSHELF_TEST_HOST_NET=1 runs on the"
                                " host's network)")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Lines in the daemon's output that fail a test wherever they appear.
BAD_OUTPUT = re.compile(r"AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|"
                        r"runtime error:|Segmentation fault|double free|stack smashing")


def pytest_collection_modifyitems(config, items):
    """Scale pytest-timeout's limit for slow (sanitizer) builds, unless a
    test sets its own."""
    base = config.getini("timeout")
    try:
        base = float(base)
    except (TypeError, ValueError):
        return
    if SLOW == 1 or not base:
        return
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(base * SLOW))


def assert_clean_output(text, what="diskshelf"):
    """Fail when a process's output holds sanitizer reports (including
    LeakSanitizer's at exit) or crash lines."""
    m = BAD_OUTPUT.search(text or "")
    assert m is None, f"{what}: sanitizer or crash output:\n{text[-4000:]}"


class Background:
    """For daemons started in the background (their stderr is /dev/null
    once they detach): `env` sends sanitizer reports to files in a
    directory, `check()` fails the test if any were written."""

    def __init__(self, directory):
        self.dir = pathlib.Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ)
        for var, name in (("ASAN_OPTIONS", "asan"), ("UBSAN_OPTIONS", "ubsan")):
            old = self.env.get(var, "")
            self.env[var] = (old + ":" if old else "") + f"log_path={self.dir / name}"

    def reports(self):
        """The text of every sanitizer report written so far."""
        return "".join(p.read_text(errors="replace") for p in sorted(self.dir.iterdir()))

    def check(self):
        text = self.reports()
        assert not text, f"sanitizer reports of a background daemon:\n{text[-4000:]}"


@pytest.fixture
def background(tmp_path):
    """Background(): env for a backgrounded daemon; checked at teardown."""
    b = Background(tmp_path / "sanitizer-reports")
    yield b
    b.check()


@pytest.fixture(scope="session")
def diskshelf():
    path = pathlib.Path(os.environ.get("DISKSHELF_BIN", ROOT / "build" / "diskshelf"))
    assert path.exists(), f"{path} is not built: run meson setup build && ninja -C build"
    return path


@pytest.fixture
def catalog(tmp_path):
    path = tmp_path / "catalog"
    path.mkdir()
    return path


def is_mounted(path):
    """True when path is a mount point listed in /proc/self/mountinfo."""
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 4 and fields[4].replace("\\040", " ") == target:
                return True
    return False


class Mount:
    """One running daemon in the foreground (-f), stopped by PID."""

    def __init__(self, binary, catalog, mountpoint, log_path, args, wait_open=True):
        self.path = pathlib.Path(mountpoint)
        self.catalog = pathlib.Path(catalog)
        self.log_path = pathlib.Path(log_path)
        self.args = list(args)
        self.returncode = None
        argv = [str(binary), "-f", *map(str, args), str(catalog), str(mountpoint)]
        self.log_file = open(log_path, "ab")
        self.proc = subprocess.Popen(argv, stdout=self.log_file, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self.pid = self.proc.pid
        try:
            wait_for(lambda: self.proc.poll() is not None or is_mounted(self.path), 30,
                     "the mount to be ready")
        except TimeoutError:
            self.stop()
            raise
        if self.proc.poll() is not None:
            self.log_file.close()
            raise RuntimeError(f"diskshelf exited with {self.proc.returncode}:\n{self.log()}")
        if wait_open:
            self.wait_opened()

    def wait_opened(self, timeout=60):
        """Wait until no entry is still opening in the background (the
        mount waits only --open-wait for them), so that sizes are final.
        A status this process may not read (another user's mount without
        allow_other) is not waited for."""
        def settled():
            try:
                return "\nopening: 0\n" in self.status() or self.proc.poll() is not None
            except OSError:
                return True
        wait_for(settled, scaled(timeout), "the entries to open")

    def log(self):
        """Everything the daemon wrote so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern, timeout=10):
        """Wait until the log matches a regular expression."""
        rx = re.compile(pattern)
        return wait_for(lambda: rx.search(self.log()), timeout, f"log line /{pattern}/")

    def status(self):
        """The text of `diskshelf status`."""
        return (self.path / ".diskshelf-status").read_text()

    def unmount(self):
        """Unmount with fusermount3 and wait for a clean exit; returns
        the exit code."""
        if self.returncode is not None:
            return self.returncode
        try:
            if is_mounted(self.path):
                r = subprocess.run(["fusermount3", "-u", str(self.path)], capture_output=True,
                                   timeout=scaled(30))
                if r.returncode != 0 and is_mounted(self.path):
                    subprocess.run(["fusermount3", "-uz", str(self.path)], capture_output=True,
                                   timeout=scaled(30))
            self.proc.wait(timeout=scaled(30))
        except subprocess.TimeoutExpired:
            pass
        finally:
            # Whatever failed above, the daemon is stopped by PID.
            code = self.stop()
        return code

    def stop(self):
        """Stop the daemon by PID (SIGTERM, then SIGKILL) and clean up;
        never leaves the process running, whatever else fails."""
        try:
            code = stop_process(self.proc, timeout=20)
        except subprocess.TimeoutExpired:
            # Not gone even after SIGKILL to its group: kill it by PID
            # again and reap it however long that takes.
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            code = self.proc.wait()
        try:
            if is_mounted(self.path):
                subprocess.run(["fusermount3", "-uz", str(self.path)], capture_output=True,
                               timeout=scaled(30))
        finally:
            if not self.log_file.closed:
                self.log_file.close()
            self.returncode = code
        return code


@pytest.fixture
def mount(diskshelf, tmp_path):
    """Factory: mount(catalog, *args) -> Mount.  A per-test cache dir is
    used unless --cache-dir is given, and torrents seed on loopback only
    (any free port) unless --torrent-listen is given.  Teardown unmounts everything, and
    fails the test if the daemon printed sanitizer errors or did not exit
    cleanly."""
    mounts = []

    def make(catalog, *args, name=None, wait_open=True):
        n = len(mounts)
        mnt = tmp_path / (name or f"mnt{n}")
        mnt.mkdir(exist_ok=True)
        args = list(args)
        if not any(str(a).startswith("--cache-dir") or "cache-dir=" in str(a) for a in args):
            args.insert(0, f"--cache-dir={tmp_path / 'cache'}")
        if not any("torrent-listen" in str(a) for a in args):
            args.insert(0, "--torrent-listen=127.0.0.1:0")
        m = Mount(diskshelf, catalog, mnt, tmp_path / f"daemon{n}.log", args, wait_open)
        mounts.append(m)
        return m

    yield make
    problems = []
    for m in mounts:
        try:
            code = m.unmount()
        except Exception as e:  # noqa: BLE001
            # Stop the others too; this one is stopped by PID below.
            problems.append(f"{m.path}: unmount failed: {e!r}")
            code = None
        finally:
            if m.returncode is None:
                m.stop()
        log = m.log()
        if BAD_OUTPUT.search(log):
            problems.append(f"{m.path}: sanitizer or crash output:\n{log[-4000:]}")
        elif code not in (0, None) and not getattr(m, "expect_unclean", False):
            problems.append(f"{m.path}: daemon exit code {code}:\n{log[-2000:]}")
    assert not problems, "\n".join(problems)


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory):
    return TestCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def nginx(tmp_path, test_ca):
    server = Nginx(tmp_path / "nginx", ca=test_ca).start()
    yield server
    server.stop()


@pytest.fixture
def tracker(tmp_path):
    """A fresh opentracker on 127.0.0.1 (whitelist only), stopped by PID."""
    from bt_helpers import Tracker
    t = Tracker(tmp_path / "tracker").start()
    yield t
    t.stop()
