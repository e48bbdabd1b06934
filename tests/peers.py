"""Helpers shared by the test suite: processes, ports, waits, entries,
a test CA, and a real nginx on 127.0.0.1.

Every process started here is stopped by PID; every wait has a timeout.
"""

import os
import pathlib
import random
import re
import signal
import socket
import subprocess
import time

# Sanitizer builds are several times slower: scale every timeout.
SLOW = float(os.environ.get("DISKSHELF_TIMEOUT_SCALE",
                            "3" if "asan" in os.environ.get("DISKSHELF_BIN", "") else "1"))


def scaled(seconds):
    """A timeout scaled for slow (sanitizer) builds."""
    return seconds * SLOW


def _ephemeral_low():
    """The first port the kernel hands to outgoing connections."""
    try:
        return int(pathlib.Path("/proc/sys/net/ipv4/ip_local_port_range")
                   .read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_PORTS_HANDED_OUT = set()
_PORT_FLOOR = 10000


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now, never
    the same one twice in this test run, and below the ephemeral range.

    Asking the kernel for port 0 used to be enough until two peers of
    one test (nginx's HTTP and HTTPS ports) were handed the same number,
    or a client's outgoing connection took the port between this call
    and the server's bind: nginx then failed to start (CI, once in 400
    tests).  A port below ip_local_port_range is never an outgoing
    connection's, and the set keeps each number to one peer."""
    ceiling = _ephemeral_low()
    for _ in range(200):
        if ceiling - _PORT_FLOOR > 1000:
            port = random.randrange(_PORT_FLOOR, ceiling)
        else:
            port = 0
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            port = s.getsockname()[1]
        if port not in _PORTS_HANDED_OUT:
            _PORTS_HANDED_OUT.add(port)
            return port
    raise RuntimeError("no free TCP port on 127.0.0.1")


def wait_for(predicate, timeout, what):
    """Poll predicate until it returns a true value; raise on timeout."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {scaled(timeout):.0f}s waiting for {what}")
        time.sleep(0.05)


def port_open(port, host="127.0.0.1"):
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def start_process(argv, log_path=None, env=None, cwd=None, stdin=None):
    """Start argv in its own session, output to log_path (or DEVNULL)."""
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    try:
        return subprocess.Popen([str(a) for a in argv], stdout=out, stderr=subprocess.STDOUT
                                if log_path else subprocess.DEVNULL,
                                stdin=stdin if stdin is not None else subprocess.DEVNULL,
                                env=env, cwd=cwd, start_new_session=True)
    finally:
        if log_path:
            out.close()


def stop_process(proc, timeout=10, sig=signal.SIGTERM):
    """Stop a process by PID: sig, then SIGKILL after timeout.  Returns
    its exit code."""
    if proc is None:
        return None
    if proc.poll() is None:
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=scaled(timeout))
        except subprocess.TimeoutExpired:
            try:
                # start_process made the process a group leader.
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)
    return proc.returncode


def write_entry(catalog, name, text):
    """Write CATALOG/NAME.conf (making subdirectories) and return its path."""
    path = pathlib.Path(catalog) / (name + ".conf")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename, as editors do, so a reload never sees half a file.
    tmp = path.parent / f".{path.name}.tmp"
    tmp.write_text(text)
    tmp.rename(path)
    return path


def run(argv, timeout=120, **kw):
    """Run a command to completion with a timeout; raise on failure."""
    return subprocess.run([str(a) for a in argv], check=True, timeout=scaled(timeout),
                          capture_output=True, **kw)


def sha256(path, chunk=4 << 20):
    """The sha256 hex digest of a file, read in big chunks."""
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                return h.hexdigest()
            h.update(b)


def vm_hwm_kib(pid):
    """Peak resident set size of a process, in KiB (VmHWM)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def sha256_all_at_once(paths, pid, timeout=300):
    """Read every path at once, one `sha256sum` each, while process pid
    (the daemon) serves them.  Returns (digests in the order of paths,
    pid's peak RSS in bytes before the readers started, and after they
    finished).  Every reader is killed and reaped even when one fails
    or the wait times out."""
    before = vm_hwm_kib(pid) * 1024
    readers = []
    try:
        for p in paths:
            readers.append(subprocess.Popen(["sha256sum", str(p)], stdout=subprocess.PIPE,
                                            text=True))
        sums = [r.communicate(timeout=scaled(timeout))[0].split()[0] for r in readers]
    finally:
        for r in readers:
            if r.poll() is None:
                r.kill()
                r.wait()
    return sums, before, vm_hwm_kib(pid) * 1024


def check_random_reads(path, data, count=100, sizes=(4096, 65536, 1500000), seed=3):
    """pread `count` random ranges of `path` and compare them with `data`."""
    import random
    rng = random.Random(seed)
    fd = os.open(path, os.O_RDONLY)
    try:
        for _ in range(count):
            off = rng.randrange(len(data))
            n = rng.choice(sizes)
            assert os.pread(fd, n, off) == data[off:off + n], (off, n)
    finally:
        os.close(fd)


def make_random_file(path, size, seed=1):
    """A file of `size` pseudo-random bytes (fast, deterministic)."""
    import random
    rng = random.Random(seed)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, 1 << 20)
            f.write(rng.randbytes(n))
            left -= n
    return path


class TestCA:
    """A throwaway certificate authority made with certtool: ca-cert.pem,
    server-cert.pem/server-key.pem (for 127.0.0.1 and localhost) and
    client-cert.pem/client-key.pem, all in one directory (the layout
    nbdkit, qemu-nbd and our NBD client expect)."""

    def __init__(self, directory):
        self.dir = pathlib.Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        d = self.dir
        self._template("ca.info", ['cn = "diskshelf test CA"', "ca", "cert_signing_key",
                                   "expiration_days = 30"])
        self._template("server.info", ['organization = "diskshelf tests"', 'cn = "localhost"',
                                       'dns_name = "localhost"', 'ip_address = "127.0.0.1"',
                                       "tls_www_server", "encryption_key", "signing_key",
                                       "expiration_days = 30"])
        self._template("client.info", ['organization = "diskshelf tests"', 'cn = "client"',
                                       "tls_www_client", "encryption_key", "signing_key",
                                       "expiration_days = 30"])
        for key in ("ca-key.pem", "server-key.pem", "client-key.pem"):
            run(["certtool", "--generate-privkey", "--key-type=rsa", "--bits=2048",
                 "--outfile", d / key])
        run(["certtool", "--generate-self-signed", "--load-privkey", d / "ca-key.pem",
             "--template", d / "ca.info", "--outfile", d / "ca-cert.pem"])
        for who in ("server", "client"):
            run(["certtool", "--generate-certificate", "--load-privkey", d / f"{who}-key.pem",
                 "--load-ca-certificate", d / "ca-cert.pem", "--load-ca-privkey",
                 d / "ca-key.pem", "--template", d / f"{who}.info",
                 "--outfile", d / f"{who}-cert.pem"])
        self.ca_cert = d / "ca-cert.pem"
        self.server_cert = d / "server-cert.pem"
        self.server_key = d / "server-key.pem"
        self.client_cert = d / "client-cert.pem"
        self.client_key = d / "client-key.pem"

    def _template(self, name, lines):
        (self.dir / name).write_text("\n".join(lines) + "\n")


NGINX_CONF = """
daemon off;
master_process on;
worker_processes 2;
user root;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 256; }}
http {{
    log_format ds '$request_method $uri $status $body_bytes_sent "$http_range" "$http_if_range" $request_time';
    access_log {prefix}/access.log ds;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    sendfile on;
    keepalive_requests 100000;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        {tls_listen}
        {tls_files}
        root {root};
        {extra}
    }}
}}
"""


class Nginx:
    """A real nginx serving `root` over HTTP (and HTTPS when a CA is given)
    on random 127.0.0.1 ports.  `extra` is text placed inside the server
    block (locations for redirects, injected errors, ...)."""

    def __init__(self, prefix, ca=None, extra=""):
        self.prefix = pathlib.Path(prefix)
        self.root = self.prefix / "www"
        self.root.mkdir(parents=True, exist_ok=True)
        (self.prefix / "tmp").mkdir(exist_ok=True)
        self.ca = ca
        self.port = free_port()
        self.tls_port = free_port() if ca else None
        self.extra = extra
        self.access_log = self.prefix / "access.log"
        self.error_log = self.prefix / "error.log"
        self.conf = self.prefix / "nginx.conf"
        self.proc = None
        self.write_conf()

    def write_conf(self):
        tls_listen = f"listen 127.0.0.1:{self.tls_port} ssl;" if self.ca else ""
        tls_files = (f"ssl_certificate {self.ca.server_cert};\n"
                     f"        ssl_certificate_key {self.ca.server_key};") if self.ca else ""
        self.conf.write_text(NGINX_CONF.format(prefix=self.prefix, port=self.port,
                                               tls_listen=tls_listen, tls_files=tls_files,
                                               root=self.root, extra=self.extra))

    def start(self):
        """Start (or restart) nginx and wait until it accepts connections."""
        self.proc = start_process(["nginx", "-p", self.prefix, "-c", self.conf],
                                  log_path=self.prefix / "nginx.out")
        wait_for(lambda: port_open(self.port) or self.proc.poll() is not None, 15,
                 "nginx to listen")
        if self.proc.poll() is not None:
            logs = [path.read_text(errors="replace")
                    for path in (self.prefix / "nginx.out", self.error_log) if path.exists()]
            raise RuntimeError("nginx failed: " + "\n".join(logs))
        return self

    def stop(self):
        """Stop nginx by PID and wait until the port is closed."""
        stop_process(self.proc, sig=signal.SIGTERM)
        self.proc = None

    def set_extra(self, extra):
        """Replace the extra server-block text and reload nginx."""
        self.extra = extra
        self.write_conf()
        if self.proc and self.proc.poll() is None:
            run(["nginx", "-p", self.prefix, "-c", self.conf, "-t"])
            os.kill(self.proc.pid, signal.SIGHUP)
            time.sleep(0.5 * SLOW)

    def url(self, name, https=False):
        """The URL of a file placed in self.root."""
        if https:
            return f"https://127.0.0.1:{self.tls_port}/{name}"
        return f"http://127.0.0.1:{self.port}/{name}"

    def requests(self):
        """Parsed access-log lines: dicts with method, uri, status, bytes,
        range."""
        rows = []
        if not self.access_log.exists():
            return rows
        pattern = re.compile(r'(\S+) (\S+) (\d+) (\d+) "([^"]*)" "([^"]*)"')
        for line in self.access_log.read_text().splitlines():
            m = pattern.match(line)
            if m:
                rows.append({"method": m.group(1), "uri": m.group(2),
                             "status": int(m.group(3)), "bytes": int(m.group(4)),
                             "range": m.group(5), "if_range": m.group(6)})
        return rows

    def bytes_sent(self, uri=None):
        """Total body bytes sent, optionally for one URI."""
        return sum(r["bytes"] for r in self.requests() if uri is None or r["uri"] == uri)
