"""Real NBD servers for the NBD tests: nbdkit, qemu-nbd and nbd-server,
each over a Unix socket or 127.0.0.1 TCP, in the clear or with TLS
(X.509 from the test CA, or PSK made by psktool).  Every server is
started in its own session and stopped by PID; every wait has a timeout."""

import concurrent.futures
import mmap
import os
import pathlib
import socket
import subprocess
import sys

import pytest

from peers import free_port, port_open, run, scaled, start_process, stop_process, wait_for

HOSTILE = pathlib.Path(__file__).resolve().parent / "nbd_hostile.py"

PSK_USER = "alice"


def make_psk(directory):
    """A PSK keys file (DIR/keys.psk, the name qemu-nbd wants) made by
    psktool for PSK_USER."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "keys.psk"
    if not path.exists():
        run(["psktool", "-u", PSK_USER, "-p", path], stdin=subprocess.DEVNULL)
    return path


# nbdkit (1.32 at least) asks the kernel for SIGTERM when its parent
# *thread* ends (PR_SET_PDEATHSIG, seen with strace).  A server started
# from a short-lived thread (the soak's fault injector) therefore starts
# a graceful shutdown the moment that thread returns: it stops accepting
# but keeps its listening socket open until its clients go, so a plain
# connect still succeeds, and then it exits 0 and every reconnect is
# refused.  Every server is started from this one thread instead, which
# lives as long as the test process.
_SPAWNER = concurrent.futures.ThreadPoolExecutor(max_workers=1,
                                                 thread_name_prefix="nbd-spawner")


def start_server_process(argv, log_path=None):
    """start_process() from the long-lived spawner thread (see above)."""
    return _SPAWNER.submit(start_process, argv, log_path=log_path).result()


def unix_ready(path):
    """True when something accepts connections on the Unix socket."""
    if not os.path.exists(path):
        return False
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(0.5)
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


def nbd_greets(address, timeout=2.0):
    """True when an NBD server answers a new connection with its greeting
    ("NBDMAGIC").  Stronger than a connect: a server shutting down may
    still hold its listening socket, so connects succeed, but it never
    accepts them.  address: a Unix socket path or a TCP port on
    127.0.0.1."""
    if isinstance(address, int):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        target = ("127.0.0.1", address)
    else:
        if not os.path.exists(address):
            return False
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target = str(address)
    try:
        s.settimeout(timeout)
        s.connect(target)
        got = b""
        while len(got) < 8:
            chunk = s.recv(8 - len(got))
            if not chunk:
                return False
            got += chunk
        return got == b"NBDMAGIC"
    except OSError:
        return False
    finally:
        s.close()


class NbdServer:
    """One real NBD server exporting `image`.

    kind: "nbdkit", "qemu-nbd" or "nbd-server"; tls: None, "x509" or
    "psk"; transport: "unix" or "tcp".  `uri()` gives the URI for a
    catalog entry."""

    def __init__(self, kind, image, workdir, tls=None, transport="unix", ca=None,
                 extra_args=(), readonly=False):
        self.kind = kind
        self.image = pathlib.Path(image)
        self.dir = pathlib.Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.tls = tls
        self.transport = transport
        self.ca = ca
        self.extra_args = list(extra_args)
        self.readonly = readonly
        self.sock = self.dir / f"{kind}.sock"
        self.port = free_port()
        self.proc = None
        self.pid_file = self.dir / "nbd-server.pid"
        self.psk = make_psk(self.dir / "psk") if tls == "psk" else None
        self.export = "disk" if kind == "nbd-server" else ""
        self.log_path = self.dir / f"{kind}.log"

    # -- command lines --------------------------------------------------
    def _nbdkit_argv(self):
        argv = ["nbdkit", "-f"]
        if self.transport == "unix":
            argv += ["-U", self.sock]
        else:
            argv += ["-i", "127.0.0.1", "-p", str(self.port)]
        if self.tls == "x509":
            argv += ["--tls=require", f"--tls-certificates={self.ca.dir}"]
        elif self.tls == "psk":
            argv += ["--tls=require", f"--tls-psk={self.psk}"]
        if self.readonly:
            argv += ["-r"]
        return argv + self.extra_args + ["file", self.image]

    def _qemu_argv(self):
        argv = ["qemu-nbd", "-t", "-f", "raw"]
        if self.transport == "unix":
            argv += ["-k", self.sock]
        else:
            argv += ["-b", "127.0.0.1", "-p", str(self.port)]
        if self.tls == "x509":
            argv += ["--object", f"tls-creds-x509,id=tls0,endpoint=server,dir={self.ca.dir}",
                     "--tls-creds", "tls0"]
        elif self.tls == "psk":
            argv += ["--object", f"tls-creds-psk,id=tls0,endpoint=server,dir={self.psk.parent}",
                     "--tls-creds", "tls0"]
        if self.readonly:
            argv += ["-r"]
        return argv + self.extra_args + [self.image]

    def _nbd_server_argv(self):
        lines = ["[generic]", f"port = {self.port}", "listenaddr = 127.0.0.1",
                 "allowlist = false"]
        if self.transport == "unix":
            lines.append(f"unixsock = {self.sock}")
        if self.tls == "x509":
            lines += [f"certfile = {self.ca.server_cert}", f"keyfile = {self.ca.server_key}",
                      f"cacertfile = {self.ca.ca_cert}", "force_tls = true"]
        elif self.tls == "psk":
            raise ValueError("nbd-server 3.24 has no PSK support")
        lines += [f"[{self.export}]", f"exportname = {self.image}",
                  f"readonly = {'true' if self.readonly else 'false'}",
                  "flush = true", "fua = true", "trim = true"]
        conf = self.dir / "nbd-server.conf"
        conf.write_text("\n".join(lines) + "\n")
        return ["nbd-server", "-C", conf, "-p", self.pid_file]

    # -- life cycle -----------------------------------------------------
    def start(self):
        """Start the server and wait until it accepts connections."""
        if self.transport == "unix" and self.sock.exists():
            self.sock.unlink()
        argv = {"nbdkit": self._nbdkit_argv, "qemu-nbd": self._qemu_argv,
                "nbd-server": self._nbd_server_argv}[self.kind]()
        if self.kind == "nbd-server" and self.pid_file.exists():
            self.pid_file.unlink()
        self.proc = start_server_process(argv, log_path=self.log_path)
        if self.kind == "nbd-server":
            # It forks into the background; the daemon's PID is in the file.
            wait_for(lambda: self.pid_file.exists() and self.pid_file.read_text().strip(),
                     15, "nbd-server to write its PID")
            self.proc.wait(timeout=scaled(10))
            self.daemon_pid = int(self.pid_file.read_text().strip())
        wait_for(lambda: self.ready() or (self.kind != "nbd-server"
                                          and self.proc.poll() is not None),
                 20, f"{self.kind} to listen")
        if self.kind != "nbd-server" and self.proc.poll() is not None:
            raise RuntimeError(f"{self.kind} exited: {self.log_path.read_text()}")
        return self

    def ready(self):
        """True when the server serves new connections.  nbdkit must send
        its greeting: once stopping it keeps its listening socket, so a
        bare connect still succeeds.  The others need only accept: a
        qemu-nbd at its --shared limit greets nobody new while the
        daemon's connections fill it, yet it serves."""
        if self.kind == "nbdkit":
            return nbd_greets(self.sock if self.transport == "unix" else self.port)
        if self.transport == "unix":
            return unix_ready(self.sock)
        return port_open(self.port)

    def stop(self, sig=None):
        """Stop the server by PID."""
        import signal
        if self.kind == "nbd-server" and getattr(self, "daemon_pid", None):
            try:
                os.kill(self.daemon_pid, sig or signal.SIGTERM)
            except ProcessLookupError:
                pass
            wait_for(lambda: not os.path.exists(f"/proc/{self.daemon_pid}")
                     or open(f"/proc/{self.daemon_pid}/stat").read().split()[2] == "Z",
                     15, "nbd-server to exit")
            self.daemon_pid = None
        elif self.proc is not None:
            stop_process(self.proc, sig=sig or signal.SIGTERM)
        self.proc = None

    def pids(self):
        """PIDs of the server's processes (nbd-server: the daemon and the
        children serving connections)."""
        if self.kind == "nbd-server":
            root = getattr(self, "daemon_pid", None)
        else:
            root = self.proc.pid if self.proc is not None else None
        if root is None:
            return []
        pids = [root]
        try:
            with open(f"/proc/{root}/task/{root}/children") as f:
                pids += [int(p) for p in f.read().split()]
        except OSError:
            pass
        return pids

    def terminate(self, timeout=20):
        """SIGTERM, as a graceful stop would send, then wait (no SIGKILL)
        until every process of the server has exited.  True if they did
        within timeout; otherwise they are killed and False returned."""
        import signal
        pids = self.pids()
        for pid in pids[:1]:
            os.kill(pid, signal.SIGTERM)

        def gone(pid):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    return f.read().split()[2] == "Z"
            except OSError:
                return True
            finally:
                if self.proc is not None and pid == self.proc.pid:
                    self.proc.poll()
        try:
            wait_for(lambda: all(gone(p) for p in pids), timeout, f"{self.kind} to exit")
            exited = True
        except TimeoutError:
            exited = False
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self.proc is not None:
            self.proc.wait(timeout=scaled(10))
        self.proc = None
        self.daemon_pid = None
        return exited

    def kill(self):
        """Kill the server at once (SIGKILL), as a crash would."""
        import signal
        self.stop(sig=signal.SIGKILL)

    def uri(self, verify=True):
        """The NBD URI a catalog entry uses for this server."""
        scheme = "nbds" if self.tls else "nbd"
        user = f"{PSK_USER}@" if self.tls == "psk" else ""
        query = []
        if self.transport == "unix":
            scheme += "+unix"
            query.append(f"socket={self.sock}")
            authority = user
        else:
            authority = f"{user}127.0.0.1:{self.port}"
        if self.tls == "x509":
            query.append(f"tls-certificates={self.ca.dir}")
        elif self.tls == "psk":
            query.append(f"tls-psk-file={self.psk}")
        if self.tls and not verify:
            query.append("tls-verify-peer=0")
        q = ("?" + "&".join(query)) if query else ""
        return f"{scheme}://{authority}/{self.export}{q}"


def direct_pread(path, offset, length):
    """Read with O_DIRECT (so the kernel asks for exactly this range)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, length)
    try:
        os.lseek(fd, offset, os.SEEK_SET)
        n = os.readv(fd, [buf])
        return bytes(buf[:n])
    finally:
        buf.close()
        os.close(fd)


@pytest.fixture
def hostile(tmp_path):
    """Factory: hostile(scenario, certdir=None) -> the Unix socket of a
    running tests/nbd_hostile.py (stopped by PID at teardown)."""
    procs = []

    def start(scenario, certdir=None):
        sock = tmp_path / f"hostile-{scenario}.sock"
        log = tmp_path / f"hostile-{scenario}.log"
        argv = [sys.executable, HOSTILE, sock, scenario]
        if certdir is not None:
            argv.append(certdir)
        p = start_process(argv, log_path=log)
        procs.append(p)
        wait_for(lambda: unix_ready(sock) or p.poll() is not None, 15, "hostile server")
        assert p.poll() is None, log.read_text()
        return sock

    yield start
    for p in procs:
        stop_process(p)
