"""A thousand entries (issue 13): entries open in the background, so a
silent server delays neither the mount nor `ls` of the others; a broken
entry comes back when its server does, without a remount; sizes learnt
at open are remembered in the disk cache, so a warm mount lists them
with no request; a catalog of a few hundred entries mounts and lists."""

import json
import os
import re
import socket
import subprocess
import threading

import pytest

from nbd_helpers import NbdServer
from peers import Nginx, free_port, make_random_file, scaled, wait_for, write_entry


class SilentServer:
    """Accepts TCP connections on 127.0.0.1 and never answers, until
    stopped: then every connection and the port are closed."""

    def __init__(self, port=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port or 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while not self.done.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.accepted.append(conn)

    def stop(self):
        self.done.set()
        self.thread.join(timeout=scaled(10))
        for conn in self.accepted:
            conn.close()
        self.sock.close()


@pytest.fixture
def silent():
    servers = []

    def make():
        s = SilentServer()
        servers.append(s)
        return s

    yield make
    for s in servers:
        if not s.done.is_set():
            s.stop()


def entry_block(status, name):
    """The status lines of one entry, as a dict."""
    m = re.search(r"^\[" + re.escape(name) + r"\]\n(.*?)\n\n", status, re.M | re.S)
    assert m, f"no status block for {name}:\n{status}"
    return dict(line.split(": ", 1) for line in m.group(1).splitlines() if ": " in line)


def ls_lr(root):
    """What `ls -lR` needs: every name and its size."""
    sizes = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.startswith("."):
                continue
            p = os.path.join(dirpath, f)
            sizes[os.path.relpath(p, root)] = os.stat(p).st_size
    return sizes


def test_silent_servers_delay_nothing_and_come_back(mount, catalog, tmp_path, silent,
                                                    diskshelf):
    good = make_random_file(tmp_path / "good.img", 3 << 20)
    image = make_random_file(tmp_path / "nbd.img", 2 << 20, seed=2)
    http_silent, nbd_silent = silent(), silent()
    write_entry(catalog, "good.img", f"source = {good}\n")
    write_entry(catalog, "web/silent.img",
                f"source = http://127.0.0.1:{http_silent.port}/disk.img\n"
                "timeout = 60\nretry-time = 1\n")
    write_entry(catalog, "nbd/silent.img",
                f"source = nbd://127.0.0.1:{nbd_silent.port}/\ncompression = auto\n"
                "timeout = 60\n")
    # Both silent servers hold their connections for as long as this
    # test wants: the mount coming up proves it did not wait for them.
    m = mount(catalog, wait_open=False)
    assert ls_lr(m.path) == {"good.img": 3 << 20, "web/silent.img": 0,
                             "nbd/silent.img": 0}
    assert (m.path / "good.img").read_bytes() == good.read_bytes()
    wait_for(lambda: http_silent.accepted and nbd_silent.accepted, scaled(20),
             "the opener to connect to both silent servers")
    status = m.status()
    assert "entries: 3\nbroken: 0\nopening: 2\n" in status
    for name in ("web/silent.img", "nbd/silent.img"):
        block = entry_block(status, name)
        assert block["state"] == "opening" and block["open"] == "no", block
    js = subprocess.run([str(diskshelf), "status", "--json", str(m.path)],
                        capture_output=True,
                        text=True, timeout=scaled(30))
    assert js.returncode == 0, js.stderr
    doc = json.loads(js.stdout)
    assert doc["entries_opening"] == 2 and doc["entries_ok"] == 1, doc
    states = {e["name"]: e["state"] for e in doc["entries"]}
    assert states == {"good.img": "ok", "web/silent.img": "opening",
                      "nbd/silent.img": "opening"}, states

    # The servers hang up: both entries are broken, with a reason, and
    # left out of the mount.
    http_silent.stop()
    nbd_silent.stop()
    wait_for(lambda: "broken: 2\nopening: 0\n" in m.status(), scaled(30),
             "both entries to be broken")
    assert ls_lr(m.path) == {"good.img": 3 << 20}
    status = m.status()
    for name in ("web/silent.img", "nbd/silent.img"):
        block = entry_block(status, name)
        assert block["state"].startswith("broken: "), block
    assert len(re.findall(r"^broken-entry: .*silent\.img\.conf:1: ", status, re.M)) == 2

    # Real servers come back on the same ports: a retry brings the
    # entries back, without a remount.
    www = Nginx(tmp_path / "nginx")
    www.port = http_silent.port
    www.write_conf()
    make_random_file(www.root / "disk.img", 5 << 20, seed=3)
    nbd = NbdServer("nbdkit", image, tmp_path / "nbdkit", transport="tcp")
    nbd.port = nbd_silent.port
    www.start()
    try:
        nbd.start()
        try:
            wait_for(lambda: "entries: 3\nbroken: 0\nopening: 0\n" in m.status(),
                     scaled(60), "the retries to bring the entries back")
            assert (m.path / "web/silent.img").read_bytes() == \
                (www.root / "disk.img").read_bytes()
            assert (m.path / "nbd/silent.img").read_bytes() == image.read_bytes()
            wait_for(lambda: ls_lr(m.path)["web/silent.img"] == 5 << 20, scaled(10),
                     "the new size to show")
            assert m.unmount() == 0
        finally:
            nbd.stop()
    finally:
        www.stop()


def test_warm_mount_lists_sizes_without_a_request(mount, catalog, tmp_path):
    www = Nginx(tmp_path / "nginx").start()
    try:
        make_random_file(www.root / "raw.img", 3 << 20)
        data = make_random_file(tmp_path / "packed.img", 6 << 20, seed=5)
        subprocess.run(["xz", "-k", "-0", "--block-size=1MiB", str(data)], check=True,
                       timeout=scaled(60))
        os.replace(str(data) + ".xz", www.root / "packed.img.xz")
        write_entry(catalog, "raw.img", f"source = {www.url('raw.img')}\n")
        write_entry(catalog, "deep/er/packed.img", f"source = {www.url('packed.img.xz')}\n")
        expect = {"raw.img": 3 << 20, "deep/er/packed.img": 6 << 20}
        m = mount(catalog)
        wait_for(lambda: "opening: 0\n" in m.status(), scaled(20), "the opens")
        assert ls_lr(m.path) == expect
        assert m.unmount() == 0
    finally:
        www.stop()
    served = len(www.requests())
    assert served > 0

    # nginx is down: the warm mount still lists every size, from the disk
    # cache; the entries are listed without being opened.
    m = mount(catalog)
    assert ls_lr(m.path) == expect
    status = m.status()
    for name in expect:
        block = entry_block(status, name)
        assert block["size"] == str(expect[name]) and block["open"] == "no", block
        assert "state" not in block, block
    assert m.unmount() == 0

    # nginx is up, and its log shows that a warm mount and `ls -lR` make
    # no request at all.
    www.start()
    try:
        m = mount(catalog)
        assert ls_lr(m.path) == expect
        assert "entries: 2\nbroken: 0\nopening: 0\n" in m.status()
        assert len(www.requests()) == served
        # The first read opens the entry.
        assert (m.path / "raw.img").read_bytes() == (www.root / "raw.img").read_bytes()
        assert len(www.requests()) > served
        assert entry_block(m.status(), "raw.img")["open"] == "yes"
        assert m.unmount() == 0

        # The source changed while nobody looked: the real open takes
        # the new size.
        make_random_file(www.root / "raw.img", 4 << 20, seed=9)
        m = mount(catalog)
        assert ls_lr(m.path)["raw.img"] == 3 << 20
        assert (m.path / "raw.img").read_bytes() == (www.root / "raw.img").read_bytes()
        assert ls_lr(m.path)["raw.img"] == 4 << 20
        assert m.unmount() == 0
    finally:
        www.stop()


def test_a_few_hundred_entries_mount_list_and_reload_one(mount, catalog, tmp_path):
    www = Nginx(tmp_path / "nginx").start()
    try:
        make_random_file(www.root / "web.img", 1 << 20)
        local = tmp_path / "local"
        local.mkdir()
        expect = {}
        for i in range(300):
            if i % 10 == 0:
                write_entry(catalog, f"web/w{i:03d}.img", f"source = {www.url('web.img')}\n")
                expect[f"web/w{i:03d}.img"] = 1 << 20
            else:
                f = local / f"{i}.img"
                with open(f, "wb") as fp:
                    fp.truncate((i + 1) * 4096)
                name = f"d{i % 7}/e{i // 7 % 5}/l{i:03d}.img"
                write_entry(catalog, name, f"source = {f}\n")
                expect[name] = (i + 1) * 4096
        m = mount(catalog)
        wait_for(lambda: "opening: 0\n" in m.status(), scaled(60), "the opens")
        assert "entries: 300\nbroken: 0\n" in m.status()
        assert ls_lr(m.path) == expect

        # Change one entry: only that one is opened again.
        before = m.log().count(": ready (")
        with open(local / "1.img", "wb") as fp:
            fp.truncate(12345)
        write_entry(catalog, "d1/e0/l001.img", f"source = {local / '1.img'}\n# edited\n")
        m.wait_log(r"catalog reloaded: 300 entries", timeout=scaled(20))
        wait_for(lambda: os.stat(m.path / "d1/e0/l001.img").st_size == 12345, scaled(10),
                 "the changed entry")
        ready = m.log().split("catalog reloaded")[0].count(": ready (")
        assert ready == before + 1, m.log()[-3000:]
        assert m.unmount() == 0
    finally:
        www.stop()
