"""BitTorrent test helpers: a tiny bencoder (to build hostile torrents and
read info-hashes), and real loopback peers stopped by PID: opentracker
(HTTP + UDP tracker, whitelist mode), an aria2c seeder, a transmission-daemon
seeder (a second, independent implementation), a python3-libtorrent
leecher (an independent implementation downloading from us), and bt-get,
our own library's test driver.

Every peer binds 127.0.0.1 only with DHT, LSD, PEX, UPnP and NAT-PMP off
(see /work/shared/reference/bittorrent-loopback-swarm.md).
"""

import base64
import hashlib
import json
import os
import re
import pathlib
import shutil
import signal
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request

import pytest

from peers import free_port, run, scaled, start_process, stop_process, wait_for

ROOT = pathlib.Path(__file__).resolve().parent.parent


# ---- bencode -------------------------------------------------------------

def bencode(v):
    """Encode ints, bytes/str, lists and dicts (keys sorted) as bencode."""
    if isinstance(v, bool):
        v = int(v)
    if isinstance(v, int):
        return b"i%de" % v
    if isinstance(v, str):
        v = v.encode()
    if isinstance(v, (bytes, bytearray)):
        return b"%d:%s" % (len(v), bytes(v))
    if isinstance(v, list):
        return b"l" + b"".join(bencode(x) for x in v) + b"e"
    if isinstance(v, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, x) for k, x in v.items())
        return b"d" + b"".join(bencode(k) + bencode(x) for k, x in items) + b"e"
    raise TypeError(type(v))


def _bdecode(data, i):
    c = data[i:i + 1]
    if c == b"i":
        end = data.index(b"e", i)
        return int(data[i + 1:end]), end + 1
    if c in (b"l", b"d"):
        i += 1
        out = [] if c == b"l" else {}
        while data[i:i + 1] != b"e":
            if c == b"l":
                v, i = _bdecode(data, i)
                out.append(v)
            else:
                k, i = _bdecode(data, i)
                start = i
                v, i = _bdecode(data, i)
                out[k] = v
                if k == b"info":
                    out[b"__info_raw__"] = data[start:i]
        return out, i + 1
    colon = data.index(b":", i)
    n = int(data[i:colon])
    return data[colon + 1:colon + 1 + n], colon + 1 + n


def bdecode(data):
    """Decode bencode (lenient; for tests only).  A dict holding "info"
    also gets b"__info_raw__", the raw bytes the info-hash is taken over."""
    v, _ = _bdecode(data, 0)
    return v


def info_hash(torrent_path):
    """Hex info-hash of a .torrent file."""
    meta = bdecode(pathlib.Path(torrent_path).read_bytes())
    return hashlib.sha1(meta[b"__info_raw__"]).hexdigest()


def make_torrent(target, out, announce=None, piece_log=15, extra=()):
    """A v1 torrent of target (file or directory) made by mktorrent."""
    argv = ["mktorrent", "-l", str(piece_log), "-o", str(out)]
    for a in ([announce] if isinstance(announce, str) else announce or []):
        argv += ["-a", a]
    argv += list(extra) + [str(target)]
    run(argv)
    return pathlib.Path(out)


needs_transmission = pytest.mark.skipif(shutil.which("transmission-daemon") is None,
                                        reason="needs transmission-daemon "
                                               "(scripts/install-deps.sh)")

needs_swarm = pytest.mark.skipif(shutil.which("opentracker") is None
                                 or shutil.which("aria2c") is None,
                                 reason="needs opentracker and aria2 (scripts/install-deps.sh)")


# ---- peers ---------------------------------------------------------------

def free_tcp_udp_port():
    """A port free for both TCP and UDP on 127.0.0.1."""
    for _ in range(50):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            try:
                u.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no port free for TCP and UDP")


ARIA2_SAFE = ["--no-conf", "--enable-dht=false", "--enable-dht6=false",
              "--bt-enable-lpd=false", "--enable-peer-exchange=false",
              "--disable-ipv6=true", "--interface=127.0.0.1",
              "--file-allocation=none", "--summary-interval=0"]


class Tracker:
    """opentracker on 127.0.0.1 (HTTP and UDP on one port); whitelist only."""

    def __init__(self, directory):
        self.dir = pathlib.Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)
        self.whitelist = self.dir / "whitelist.txt"
        self.whitelist.write_text("")
        os.chmod(self.whitelist, 0o644)
        self.port = free_tcp_udp_port()
        self.proc = None

    @property
    def http(self):
        return f"http://127.0.0.1:{self.port}/announce"

    @property
    def udp(self):
        return f"udp://127.0.0.1:{self.port}/announce"

    def start(self):
        argv = ["opentracker", "-i", "127.0.0.1", "-p", self.port, "-P", self.port,
                "-d", self.dir, "-w", "whitelist.txt"]
        if os.getuid() == 0:
            argv += ["-u", "nobody"]
        self.proc = start_process(argv, self.dir.parent / "opentracker.log", cwd=self.dir)
        wait_for(lambda: self.scrape("00" * 20) is not None, 10, "opentracker")
        return self

    def allow(self, *hashes):
        with open(self.whitelist, "a") as f:
            for h in hashes:
                f.write(h + "\n")
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGHUP)

    def scrape(self, hexhash):
        """The raw scrape reply, or None if the tracker does not answer."""
        q = urllib.parse.quote_from_bytes(bytes.fromhex(hexhash))
        try:
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.port}/scrape?info_hash={q}", timeout=2) as r:
                return r.read()
        except OSError:
            return None

    def complete(self, hexhash):
        """How many seeders the tracker counts for hexhash."""
        body = self.scrape(hexhash) or b""
        try:
            files = bdecode(body).get(b"files", {})
            return files.get(bytes.fromhex(hexhash), {}).get(b"complete", 0)
        except (ValueError, IndexError, AttributeError):
            return 0

    def stop(self):
        stop_process(self.proc)


class Aria2Seeder:
    """aria2c seeding torrents from data_dir on 127.0.0.1:port.  With
    rpc=True its JSON-RPC listens on 127.0.0.1 (rpc_port), for its own
    upload counter (uploaded)."""

    def __init__(self, workdir, data_dir, torrents, uplimit=None, rpc=False):
        self.dir = pathlib.Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.rpc_port = free_port() if rpc else None
        argv = ["aria2c", *ARIA2_SAFE, "--seed-ratio=0.0", "--check-integrity=true", "-Z",
                f"--dir={data_dir}", f"--listen-port={self.port}",
                f"--log={self.dir / 'aria2.log'}", "--log-level=info"]
        if uplimit:
            argv.append(f"--max-overall-upload-limit={uplimit}")
        if rpc:
            argv += ["--enable-rpc=true", "--rpc-listen-all=false",
                     f"--rpc-listen-port={self.rpc_port}"]
        self.argv = argv + [str(t) for t in torrents]
        self.proc = None

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    def rpc(self, method, *params):
        body = json.dumps({"jsonrpc": "2.0", "id": "t", "method": method,
                           "params": list(params)}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.rpc_port}/jsonrpc", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())["result"]

    def uploaded(self, hexhash):
        """Bytes aria2 uploaded for hexhash (its own uploadLength)."""
        for d in self.rpc("aria2.tellActive", ["infoHash", "uploadLength"]):
            if d.get("infoHash") == hexhash:
                return int(d["uploadLength"])
        raise KeyError(f"aria2 does not seed {hexhash}")

    def start(self):
        self.proc = start_process(self.argv, self.dir / "aria2.out")
        if self.rpc_port:
            def up():
                assert self.proc.poll() is None, (self.dir / "aria2.out").read_text()
                try:
                    return self.rpc("aria2.getVersion")
                except OSError:
                    return None
            wait_for(up, 30, "aria2's RPC")
        return self

    def stop(self):
        stop_process(self.proc)


class TransmissionSeeder:
    """transmission-daemon seeding torrents from data_dir: its own config
    dir, peer and RPC ports free on 127.0.0.1, DHT, LPD, PEX, uTP and
    port forwarding off, bound to 127.0.0.1 (see
    bittorrent-loopback-swarm.md); stopped by PID.  Torrents are added over
    its JSON-RPC, which also gives its own upload counter (uploadedEver).
    Transmission 3.00 does not connect out to 127.0.0.0/8, so it is only a
    seeder here: peers come to it."""

    SEEDING = 6           # tr_torrent_activity TR_STATUS_SEED

    def __init__(self, workdir, data_dir, torrents, uplimit_kib=None):
        self.dir = pathlib.Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = pathlib.Path(data_dir)
        self.torrents = [pathlib.Path(t) for t in torrents]
        self.port = free_tcp_udp_port()
        self.rpc_port = free_port()
        self.session_id = ""
        self.proc = None
        settings = {
            "dht-enabled": False, "lpd-enabled": False, "pex-enabled": False,
            "utp-enabled": False, "port-forwarding-enabled": False,
            "blocklist-enabled": False,
            "bind-address-ipv4": "127.0.0.1", "bind-address-ipv6": "::1",
            "peer-port": self.port, "peer-port-random-on-start": False,
            "rpc-enabled": True, "rpc-bind-address": "127.0.0.1",
            "rpc-port": self.rpc_port, "rpc-authentication-required": False,
            "rpc-whitelist-enabled": True, "rpc-whitelist": "127.0.0.1",
            "rpc-host-whitelist-enabled": False,
            "watch-dir-enabled": False, "download-dir": str(self.data_dir),
            "incomplete-dir-enabled": False, "ratio-limit-enabled": False,
            "idle-seeding-limit-enabled": False, "speed-limit-down-enabled": False,
            "speed-limit-up-enabled": uplimit_kib is not None,
            "speed-limit-up": uplimit_kib or 0, "alt-speed-enabled": False,
            "start-added-torrents": True, "trash-original-torrent-files": False,
            "cache-size-mb": 4, "message-level": 2,
        }
        (self.dir / "settings.json").write_text(json.dumps(settings, indent=1))

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    def log(self):
        path = self.dir / "transmission.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def rpc(self, method, **arguments):
        """One JSON-RPC call; returns its "arguments" (the session id
        handshake, HTTP 409, is done here)."""
        body = json.dumps({"method": method, "arguments": arguments}).encode()
        for _ in range(3):
            req = urllib.request.Request(f"http://127.0.0.1:{self.rpc_port}/transmission/rpc",
                                         data=body, method="POST",
                                         headers={"X-Transmission-Session-Id": self.session_id})
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    reply = json.loads(r.read())
            except urllib.error.HTTPError as e:
                if e.code == 409:
                    self.session_id = e.headers.get("X-Transmission-Session-Id", "")
                    continue
                raise
            assert reply.get("result") == "success", reply
            return reply.get("arguments", {})
        raise RuntimeError("transmission RPC: no session id")

    def _rpc_up(self):
        try:
            self.rpc("session-get")
            return True
        except OSError:
            return False

    def torrents_status(self):
        """{hex info-hash: torrent-get fields} for every torrent."""
        got = self.rpc("torrent-get", fields=["hashString", "status", "percentDone",
                                              "uploadedEver", "peersConnected", "error",
                                              "errorString"])
        return {t["hashString"]: t for t in got["torrents"]}

    def uploaded(self, hexhash):
        """Bytes this transmission uploaded for hexhash (its own counter)."""
        return self.torrents_status()[hexhash]["uploadedEver"]

    def start(self):
        self.proc = start_process(["transmission-daemon", "-f", "-g", self.dir,
                                   "-e", self.dir / "transmission.log"],
                                  self.dir / "transmission.out")
        wait_for(lambda: self.proc.poll() is not None or self._rpc_up(), 30,
                 "transmission's RPC")
        assert self.proc.poll() is None, (self.dir / "transmission.out").read_text()
        for t in self.torrents:
            self.rpc("torrent-add", metainfo=base64.b64encode(t.read_bytes()).decode(),
                     **{"download-dir": str(self.data_dir)})
        hashes = [info_hash(t) for t in self.torrents]

        def seeding():
            st = self.torrents_status()
            bad = [t["errorString"] for t in st.values() if t["error"]]
            assert not bad, bad
            return all(st[h]["status"] == self.SEEDING and st[h]["percentDone"] == 1
                       if h in st else False for h in hashes)
        wait_for(seeding, 60, "transmission to check its data and seed")
        return self

    def stop(self):
        stop_process(self.proc)


# Sanitizer reports in bt-get's output fail the test that ran it.
SANITIZER = re.compile(r"AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|runtime error:")


def check_clean(text):
    m = SANITIZER.search(text)
    assert m is None, "bt-get sanitizer report:\n" + text[max(0, m.start() - 200):][:6000]


def bt_get_path():
    """bt-get, next to the daemon under test (build/ or build-asan/)."""
    daemon = pathlib.Path(os.environ.get("DISKSHELF_BIN", ROOT / "build" / "diskshelf"))
    path = daemon.parent / "bt" / "bt-get"
    assert path.exists(), f"{path} is not built"
    return path


class BtGet:
    """bt-get as a background process (seeding, or fetching)."""

    def __init__(self, log_path, *args):
        self.log_path = pathlib.Path(log_path)
        self.argv = [bt_get_path(), *args]
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([str(a) for a in self.argv], stdout=subprocess.PIPE,
                                     stderr=open(self.log_path, "ab"), text=True,
                                     start_new_session=True)
        return self

    def read_port(self):
        line = self.proc.stdout.readline()
        assert line.startswith("port "), f"bt-get said {line!r}; log: {self.log()}"
        return int(line.split()[1])

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self):
        """SIGTERM, then the key=value counters it printed."""
        stop_process(self.proc, timeout=30)
        out = self.proc.stdout.read()
        check_clean(self.log())
        return dict(l.split("=", 1) for l in out.splitlines() if "=" in l)


def bt_get(*args, timeout=120):
    """Run bt-get to completion; returns (returncode, stdout, stderr)."""
    p = subprocess.run([str(bt_get_path()), *map(str, args)], capture_output=True, text=True,
                       timeout=scaled(timeout))
    check_clean(p.stderr)
    return p.returncode, p.stdout, p.stderr


def counters(stdout):
    return dict(l.split("=", 1) for l in stdout.splitlines() if "=" in l)


LT_LEECH = r'''
import sys, time, libtorrent as lt
torrent, outdir, port, limit = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
peer = sys.argv[5] if len(sys.argv) > 5 else None
s = lt.session({"listen_interfaces": "127.0.0.1:%d" % port, "outgoing_interfaces": "127.0.0.1",
                "enable_dht": False, "enable_lsd": False, "enable_upnp": False,
                "enable_natpmp": False, "allow_multiple_connections_per_ip": True,
                "enable_incoming_utp": False, "enable_outgoing_utp": False,
                "alert_mask": lt.alert.category_t.error_notification})
h = s.add_torrent({"ti": lt.torrent_info(torrent), "save_path": outdir})
if peer:
    host, p = peer.rsplit(":", 1)
    h.connect_peer((host, int(p)))
end = time.monotonic() + limit
while time.monotonic() < end:
    st = h.status()
    if st.is_seeding:
        print("done", st.total_payload_download, flush=True)
        sys.exit(0)
    time.sleep(0.2)
print("timeout", h.status().progress, flush=True)
sys.exit(1)
'''


def lt_leech(workdir, torrent, outdir, limit=60, peer=None):
    """Download torrent into outdir with python3-libtorrent; returns
    (returncode, output).  The leecher is a separate process, stopped by
    PID when it overruns."""
    workdir = pathlib.Path(workdir)
    script = workdir / "lt_leech.py"
    script.write_text(LT_LEECH)
    argv = ["/usr/bin/python3", str(script), str(torrent), str(outdir), str(free_port()),
            str(scaled(limit))]
    if peer:
        argv.append(peer)
    proc = start_process(argv, workdir / "lt_leech.log")
    try:
        proc.wait(timeout=scaled(limit) + 30)
    except subprocess.TimeoutExpired:
        pass
    rc = stop_process(proc)
    return rc, (workdir / "lt_leech.log").read_text(errors="replace")


class FakeHttpTracker:
    """A scripted HTTP tracker in a thread of the test: it records every
    announce (time and decoded query) and answers with `interval` and the
    compact peers given."""

    def __init__(self, interval, peers=()):
        import http.server
        import threading
        import time
        self.announces = []
        self.interval = interval
        self.peers = list(peers)
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query,
                                          encoding="latin-1")
                outer.announces.append((time.monotonic(), {k: v[0] for k, v in q.items()}))
                body = bencode({"interval": outer.interval,
                                "peers": b"".join(socket.inet_aton(h) + p.to_bytes(2, "big")
                                                  for h, p in outer.peers)})
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/announce"

    def start(self):
        self.thread.start()
        return self

    def ours(self):
        """Announces from bt-get (peer id prefix -DS0010-)."""
        return [(t, q) for t, q in self.announces if q.get("peer_id", "").startswith("-DS0010-")]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


class FakeUdpTracker:
    """A scripted BEP 15 tracker on UDP 127.0.0.1 in a thread of the test.
    It ignores the first connect request (so the client must retransmit),
    answers the first announce with a reply for another transaction (which
    the client must ignore) and then with the real one, listing `peers`."""

    def __init__(self, peers=()):
        import struct
        import threading
        self.struct = struct
        self.peers = list(peers)
        self.connects = 0
        self.announces = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self):
        return f"udp://127.0.0.1:{self.port}/announce"

    def start(self):
        self.thread.start()
        return self

    def _run(self):
        st = self.struct
        while not self.stopping:
            try:
                data, addr = self.sock.recvfrom(2048)
            except (socket.timeout, OSError):
                continue
            if len(data) == 16 and data[:12] == st.pack(">QI", 0x41727101980, 0):
                self.connects += 1
                if self.connects == 1:
                    continue                     # lost: the client must resend
                txid = data[12:16]
                self.sock.sendto(st.pack(">I", 0) + txid + b"CONNID42", addr)
            elif len(data) >= 98 and data[:8] == b"CONNID42":
                action, txid = st.unpack(">II", data[8:16])
                event, = st.unpack(">I", data[80:84])
                self.announces.append(event)
                peers = b"".join(socket.inet_aton(h) + p.to_bytes(2, "big")
                                 for h, p in self.peers)
                other = st.pack(">II", 1, (txid + 1) & 0xFFFFFFFF)
                self.sock.sendto(other + st.pack(">III", 60, 0, 1), addr)
                self.sock.sendto(st.pack(">IIIII", 1, txid, 60, 0, len(self.peers)) + peers,
                                 addr)

    def stop(self):
        self.stopping = True
        self.thread.join(timeout=10)
        self.sock.close()


LT_SEED = r'''
import sys, time, libtorrent as lt
torrent, datadir, port, limit = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
s = lt.session({"listen_interfaces": "127.0.0.1:%d" % port, "outgoing_interfaces": "127.0.0.1",
                "enable_dht": False, "enable_lsd": False, "enable_upnp": False,
                "enable_natpmp": False, "allow_multiple_connections_per_ip": True,
                "enable_incoming_utp": False, "enable_outgoing_utp": False,
                "alert_mask": lt.alert.category_t.error_notification})
h = s.add_torrent({"ti": lt.torrent_info(torrent), "save_path": datadir,
                   "flags": lt.torrent_flags.seed_mode})
print("seeding", flush=True)
end = time.monotonic() + limit
while time.monotonic() < end:
    time.sleep(0.5)
'''


def make_hybrid_torrent(directory, out, piece_size=16384):
    """A hybrid v1/v2 torrent of directory (BEP 52 + BEP 47 pad files),
    made by python3-libtorrent in a child process."""
    code = ("import sys, libtorrent as lt\n"
            "fs = lt.file_storage(); lt.add_files(fs, sys.argv[1])\n"
            "ct = lt.create_torrent(fs, int(sys.argv[3]))\n"
            "lt.set_piece_hashes(ct, sys.argv[4])\n"
            "open(sys.argv[2], 'wb').write(lt.bencode(ct.generate()))\n")
    directory = pathlib.Path(directory)
    run(["/usr/bin/python3", "-c", code, directory.name, out, piece_size, directory.parent],
        cwd=directory.parent)
    return pathlib.Path(out)


class LtSeeder:
    """python3-libtorrent seeding one torrent from datadir on 127.0.0.1."""

    def __init__(self, workdir, torrent, datadir, limit=300):
        self.dir = pathlib.Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        script = self.dir / "lt_seed.py"
        script.write_text(LT_SEED)
        self.port = free_port()
        self.argv = ["/usr/bin/python3", script, torrent, datadir, self.port, scaled(limit)]
        self.proc = None

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        self.proc = start_process(self.argv, self.dir / "lt_seed.log")
        wait_for(lambda: "seeding" in (self.dir / "lt_seed.log").read_text(), 30,
                 "the libtorrent seeder")
        return self

    def stop(self):
        stop_process(self.proc)
