"""A password written in a source URL (user:SECRET@host) must never reach
the daemon's log or `diskshelf status`, whatever the stack behind the
entry: plain HTTP, xz over HTTP, tar and tar.xz over HTTP (found
members, missing members, and a member whose reads fail later), and an
NBD export.  Local sources (a file and a tar) are the control: their
path, which looks like a URL's user:password@ but is a file name, must
be shown as it is, proving that sources do reach the log and status
this test greps."""

import re
import subprocess

import pytest

from nbd_helpers import NbdServer
from peers import free_port, run, scaled, sha256, wait_for, write_entry
from tar_helpers import tar_create, write_random
from xz_helpers import make_image, xz

MIB = 1024 * 1024
SECRET = "Sw0rdfish-s3cret"
# Shown unredacted: a local file whose path contains "user:...@".
VISIBLE = "V1sible-local"


def serve(nginx, path):
    """Hard-link a file into nginx's root; its URL with a password."""
    target = nginx.root / path.name
    target.hardlink_to(path)
    return nginx.url(path.name).replace("http://", f"http://alice:{SECRET}@")


@pytest.fixture
def sources(tmp_path):
    """raw.img (3 MiB), disk.img.xz (multi-block), arch.tar holding
    member.img (48 MiB: more than the HTTP read-ahead fetches after a
    small read at its start) and arch.tar.xz (1 MiB blocks)."""
    d = tmp_path / "src"
    d.mkdir()
    raw = make_image(d / "raw.img", 3 * MIB, seed=1)
    xz(raw, d / "disk.img.xz", "--block-size=1MiB")
    write_random(d / "tree" / "member.img", 48 * MIB, seed=2)
    tar = tar_create(d / "arch.tar", d / "tree", ["member.img"], "gnu")
    run(["xz", "-0", "-T1", "--block-size=1MiB", "-k", tar], timeout=300)
    local_dir = d / f"bob:{VISIBLE}@dir"
    local_dir.mkdir()
    (local_dir / "local.img").hardlink_to(raw)
    (local_dir / "local.tar").hardlink_to(tar)
    return d, local_dir


def test_no_password_in_log_or_status(sources, tmp_path, nginx, catalog, mount, diskshelf):
    d, local = sources
    nbd = NbdServer("nbdkit", d / "raw.img", tmp_path / "nbd", transport="tcp",
                    readonly=True).start()
    try:
        tar_url = serve(nginx, d / "arch.tar")
        write_entry(catalog, "raw", f"source = {serve(nginx, d / 'raw.img')}\n")
        write_entry(catalog, "xz", f"source = {serve(nginx, d / 'disk.img.xz')}\n")
        write_entry(catalog, "tar", f"source = {tar_url}\nentry = member.img\n"
                    "retry-time = 1\n")
        write_entry(catalog, "tarxz", f"source = {serve(nginx, d / 'arch.tar.xz')}\n"
                    "entry = member.img\n")
        write_entry(catalog, "tar-missing", f"source = {tar_url}\nentry = no-such.img\n")
        write_entry(catalog, "nbd", f"source = nbd://alice:{SECRET}@127.0.0.1:{nbd.port}/\n")
        write_entry(catalog, "nbd-down", f"source = nbd://alice:{SECRET}@127.0.0.1:{free_port()}/\n"
                    "retry-time = 1\ntimeout = 2\n")
        write_entry(catalog, "local", f"source = {local / 'local.img'}\n")
        write_entry(catalog, "localtar", f"source = {local / 'local.tar'}\nentry = member.img\n")
        m = mount(catalog, "--cache-dir=none")

        for name in ("raw", "xz", "nbd", "local"):
            assert sha256(m.path / name) == sha256(d / "raw.img"), name
        with open(m.path / "tar", "rb") as f:
            assert len(f.read(4096)) == 4096
        for name in ("tarxz", "localtar"):
            assert sha256(m.path / name) == sha256(d / "tree" / "member.img"), name
        assert not (m.path / "tar-missing").exists()
        m.wait_log(r"tar-missing: .*no member 'no-such.img'")

        # A read of the tar member that fails later (the archive changed
        # on the server): its error climbs up through the tar layer into
        # the log and status' last-error.
        (nginx.root / "arch.tar").unlink()
        (nginx.root / "arch.tar").write_bytes(b"changed")
        with pytest.raises(OSError):
            with open(m.path / "tar", "rb") as f:
                f.seek(40 * MIB)
                f.read(65536)
        wait_for(lambda: re.search(r"last-error: .*tar: http", m.status()), 10,
                 "the tar read error in status")

        status = subprocess.run([str(diskshelf), "status", str(m.path)], capture_output=True,
                                check=True, timeout=scaled(30)).stdout.decode()
        log = m.log()
        for text, what in ((log, "daemon log"), (status, "diskshelf status")):
            leaks = [line for line in text.splitlines() if SECRET in line]
            assert not leaks, f"password in the {what}:\n" + "\n".join(leaks)
            # The control and the redacted sources are really there.
            assert f"bob:{VISIBLE}@dir" in text, what
            assert "***@127.0.0.1" in text, what
        # Each stack printed its (redacted) source where this test looks.
        for line in ("tar: http://***@127.0.0.1", "xz: http://***@127.0.0.1",
                     "nbd://***@127.0.0.1"):
            assert line in log + status, line
        assert re.search(r"last-error: .*tar: http://\*\*\*@127\.0\.0\.1", status), status
    finally:
        nbd.stop()
