"""NBD entries against the three real servers (nbdkit, qemu-nbd,
nbd-server), in the clear and over TLS (X.509 from the test CA, PSK from
psktool; nbd-server 3.24 has no PSK), over Unix sockets and 127.0.0.1:
whole-export checksum, a write that reaches the server's file, and holes
seen through SEEK_HOLE."""

import errno
import os
import re
import subprocess

import pytest

from nbd_helpers import NbdServer
from peers import make_random_file, sha256, write_entry

MiB = 1 << 20
SIZE = 16 * MiB

# (server, tls, transport): plain over TCP, X.509 over a Unix socket
# (the chain is verified there too), PSK over TCP; nbd-server X.509 on
# both so the certificate's IP address is checked as well.
CASES = [
    ("nbdkit", None, "tcp"), ("nbdkit", "x509", "unix"), ("nbdkit", "psk", "tcp"),
    ("qemu-nbd", None, "unix"), ("qemu-nbd", "x509", "tcp"), ("qemu-nbd", "psk", "unix"),
    ("nbd-server", None, "tcp"), ("nbd-server", "x509", "unix"), ("nbd-server", "x509", "tcp"),
]


def make_sparse_image(path):
    """16 MiB: random data in [0, 4 MiB) and [12 MiB, 13 MiB), holes
    elsewhere."""
    data = make_random_file(path.with_suffix(".data"), 5 * MiB, seed=3).read_bytes()
    with open(path, "wb") as f:
        f.truncate(SIZE)
        f.write(data[:4 * MiB])
        f.seek(12 * MiB)
        f.write(data[4 * MiB:])
    return path


@pytest.fixture(params=CASES, ids=lambda c: "-".join(x or "plain" for x in c))
def server(request, tmp_path, test_ca):
    kind, tls, transport = request.param
    image = make_sparse_image(tmp_path / "export.img")
    srv = NbdServer(kind, image, tmp_path / "srv", tls=tls, transport=transport,
                    ca=test_ca).start()
    yield srv
    srv.stop()


def test_checksum_write_and_holes(mount, catalog, server):
    image = server.image
    want = sha256(image)
    write_entry(catalog, "disk.img", f"source = {server.uri()}\n")
    m = mount(catalog)
    path = m.path / "disk.img"
    assert os.stat(path).st_size == SIZE
    assert sha256(path) == want

    # A write (not aligned to anything) goes to the server's file.
    payload = os.urandom(70000)
    with open(path, "r+b", buffering=0) as f:
        f.seek(5 * MiB + 123)
        assert f.write(payload) == len(payload)
        os.fsync(f.fileno())
    with open(image, "rb") as f:
        f.seek(5 * MiB + 123)
        assert f.read(len(payload)) == payload
    with open(path, "rb", buffering=0) as f:
        f.seek(5 * MiB + 123)
        assert f.read(len(payload)) == payload

    fd = os.open(path, os.O_RDONLY)
    try:
        hole = os.lseek(fd, 0, os.SEEK_HOLE)
        if server.kind == "nbd-server":
            # nbd-server 3.24 refuses structured replies, so there is no
            # block status: the export is one run of data.
            assert hole == SIZE
        else:
            assert hole == 4 * MiB
            assert os.lseek(fd, hole, os.SEEK_DATA) == 5 * MiB
            assert os.lseek(fd, 6 * MiB, os.SEEK_DATA) == 12 * MiB
            assert os.lseek(fd, 12 * MiB, os.SEEK_HOLE) == 13 * MiB
    finally:
        os.close(fd)
    assert "error" not in m.log().lower()
    assert m.unmount() == 0


def test_cp_sparse_preserves_holes(mount, catalog, tmp_path, test_ca):
    image = make_sparse_image(tmp_path / "export.img")
    srv = NbdServer("nbdkit", image, tmp_path / "srv", transport="unix").start()
    try:
        write_entry(catalog, "disk.img", f"source = {srv.uri()}\n")
        m = mount(catalog)
        out = tmp_path / "copy.img"
        subprocess.run(["cp", "--sparse=always", m.path / "disk.img", out], check=True,
                       timeout=60)
        assert sha256(out) == sha256(image)
        assert os.stat(out).st_blocks * 512 <= 6 * MiB
        assert m.unmount() == 0
    finally:
        srv.stop()


def test_readonly_entry_and_readonly_server(mount, catalog, tmp_path):
    image = make_sparse_image(tmp_path / "export.img")
    rw = NbdServer("nbdkit", image, tmp_path / "rw", transport="unix").start()
    ro = NbdServer("qemu-nbd", image, tmp_path / "ro", transport="unix",
                   readonly=True, extra_args=["--shared=4"]).start()
    try:
        write_entry(catalog, "entry-ro.img", f"source = {rw.uri()}\nreadonly = yes\n")
        write_entry(catalog, "server-ro.img", f"source = {ro.uri()}\n")
        m = mount(catalog)
        for name in ("entry-ro.img", "server-ro.img"):
            st = os.stat(m.path / name)
            assert st.st_mode & 0o222 == 0, name
            with pytest.raises(OSError) as e:
                open(m.path / name, "r+b")
            assert e.value.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
            assert sha256(m.path / name) == sha256(image)
        assert m.unmount() == 0
    finally:
        rw.stop()
        ro.stop()


def test_tls_refuses_wrong_ca_and_plaintext(mount, catalog, tmp_path, test_ca):
    """nbds:// with a CA that did not sign the server is refused, and a
    plaintext server is never used for nbds://."""
    from peers import TestCA
    other = TestCA(tmp_path / "other-ca")
    image = make_sparse_image(tmp_path / "export.img")
    tls = NbdServer("nbdkit", image, tmp_path / "tls", tls="x509", transport="unix",
                    ca=test_ca).start()
    plain = NbdServer("nbdkit", image, tmp_path / "plain", transport="unix").start()
    try:
        wrong = tls.uri().replace(str(test_ca.dir), str(other.dir))
        write_entry(catalog, "wrong-ca.img", f"source = {wrong}\n")
        write_entry(catalog, "plain.img",
                    f"source = nbds+unix:///?socket={plain.sock}"
                    f"&tls-certificates={test_ca.dir}\n")
        write_entry(catalog, "good.img", f"source = {tls.uri()}\n")
        m = mount(catalog)
        assert sha256(m.path / "good.img") == sha256(image)
        log = m.log()
        # Refused for the right reason: the certificate's issuer is not
        # the CA we trust; the plaintext server cannot do STARTTLS.
        assert re.search(r"wrong-ca\.img: left out of the mount: .*TLS handshake failed: "
                         r".*certificate issuer is unknown", log), log
        assert re.search(r"plain\.img: left out of the mount: .*STARTTLS \(nbds:// never "
                         r"falls back to plaintext\) refused", log), log
        for name in ("wrong-ca.img", "plain.img"):
            assert not (m.path / name).exists()
        assert m.unmount() == 0
    finally:
        tls.stop()
        plain.stop()


def test_multi_conn_only_when_the_server_allows_it(mount, catalog, tmp_path):
    image = make_sparse_image(tmp_path / "export.img")
    kit = NbdServer("nbdkit", image, tmp_path / "kit", transport="unix").start()
    qemu = NbdServer("qemu-nbd", image, tmp_path / "qemu", transport="unix").start()
    try:
        write_entry(catalog, "kit.img", f"source = {kit.uri()}\n")
        write_entry(catalog, "kit2.img", f"source = {kit.uri()}\nconnections = 2\n")
        # qemu-nbd with the default --shared=1 does not offer multi-conn.
        write_entry(catalog, "qemu.img", f"source = {qemu.uri()}\n")
        m = mount(catalog)
        status = m.status()
        conns = {}
        section = None
        for line in status.splitlines():
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1]
            elif line.startswith("nbd-connections:"):
                conns[section] = int(line.split(":")[1])
        assert conns == {"kit.img": 4, "kit2.img": 2, "qemu.img": 1}, status
        for name in ("kit.img", "kit2.img", "qemu.img"):
            assert sha256(m.path / name) == sha256(image)
        assert m.unmount() == 0
    finally:
        kit.stop()
        qemu.stop()


def test_fallocate_and_block_size_constraints(mount, catalog, tmp_path):
    """Punch-hole reaches the server as TRIM, zero-range as WRITE_ZEROES,
    and unaligned writes work against a server that refuses unaligned
    requests (minimum block size 4096)."""
    import ctypes
    import ctypes.util
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
    PUNCH, KEEP, ZERO = 0x02, 0x01, 0x10

    image = make_sparse_image(tmp_path / "export.img")
    srv = NbdServer("nbdkit", image, tmp_path / "srv", transport="unix",
                    extra_args=["--filter=blocksize-policy"])
    srv._orig_argv = srv._nbdkit_argv
    srv._nbdkit_argv = lambda: srv._orig_argv() + [
        "blocksize-minimum=4096", "blocksize-preferred=65536",
        "blocksize-maximum=1M", "blocksize-error-policy=error"]
    srv.start()
    try:
        write_entry(catalog, "disk.img", f"source = {srv.uri()}\n")
        m = mount(catalog)
        path = m.path / "disk.img"
        fd = os.open(path, os.O_RDWR)
        try:
            # Unaligned write, read back through the mount and on the server.
            payload = os.urandom(10000)
            os.pwrite(fd, payload, 12 * MiB + 777)
            os.fsync(fd)
            assert os.pread(fd, len(payload), 12 * MiB + 777) == payload
            with open(image, "rb") as f:
                f.seek(12 * MiB + 777)
                assert f.read(len(payload)) == payload
            # Zero range inside the data.
            assert libc.fallocate(fd, ZERO | KEEP, 1 * MiB, 256 * 1024) == 0, ctypes.get_errno()
            os.fsync(fd)
            with open(image, "rb") as f:
                f.seek(1 * MiB)
                assert f.read(256 * 1024) == bytes(256 * 1024)
            # Punch a hole: the server's file gets a hole, SEEK_HOLE sees it.
            assert libc.fallocate(fd, PUNCH | KEEP, 2 * MiB, MiB) == 0, ctypes.get_errno()
            os.fsync(fd)
            with open(image, "rb") as f:
                f.seek(2 * MiB)
                assert f.read(MiB) == bytes(MiB)
            assert os.lseek(fd, 0, os.SEEK_HOLE) <= 2 * MiB
        finally:
            os.close(fd)
        assert m.unmount() == 0
    finally:
        srv.stop()


def test_parallel_big_reads_over_several_connections(mount, catalog, tmp_path):
    """Big reads split over the connections, from several threads at once,
    all finish promptly: no reply may wait for a reader that never comes
    (a lost hand-over of the reader role shows up as timeouts here)."""
    image = make_random_file(tmp_path / "export.img", 48 * MiB, seed=4)
    srv = NbdServer("nbdkit", image, tmp_path / "srv", transport="unix").start()
    try:
        write_entry(catalog, "disk.img", f"source = {srv.uri()}\ntimeout = 4\n")
        m = mount(catalog)
        data = image.read_bytes()
        for _ in range(3):
            outs = [tmp_path / f"part{i}" for i in range(8)]
            procs = [subprocess.Popen(["dd", f"if={m.path / 'disk.img'}", f"of={out}",
                                       "bs=1M", f"skip={6 * i}", "count=6", "iflag=direct",
                                       "status=none"])
                     for i, out in enumerate(outs)]
            try:
                for p in procs:
                    assert p.wait(timeout=60) == 0
            finally:
                for p in procs:
                    if p.poll() is None:
                        p.kill()
                        p.wait()
            for i, out in enumerate(outs):
                assert out.read_bytes() == data[6 * i * MiB:6 * (i + 1) * MiB]
        status = m.status()
        assert "nbd-timeouts: 0" in status and "nbd-reconnects: 0" in status, status
        assert m.unmount() == 0
    finally:
        srv.stop()
