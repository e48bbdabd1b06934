"""Entry keys of HTTP entries that had no test: writes are refused with
EROFS, `tls-verify = no`, `ca-path` and `user-agent` each take effect
(nginx's own logs show what it received)."""

import errno
import os

import pytest

from http_helpers import http_server, place_image  # noqa: F401
from peers import scaled, sha256, wait_for, write_entry

MiB = 1 << 20


def test_writes_refused_with_erofs(mount, catalog, http_server):
    image = place_image(http_server, "disk.img", 2 * MiB)
    write_entry(catalog, "d.img", f"source = {http_server.url('disk.img')}\n")
    m = mount(catalog)
    with pytest.raises(OSError) as e:
        os.open(m.path / "d.img", os.O_WRONLY)
    assert e.value.errno == errno.EROFS
    with pytest.raises(OSError) as e:
        os.open(m.path / "d.img", os.O_RDWR)
    assert e.value.errno == errno.EROFS
    with pytest.raises(OSError) as e:
        os.truncate(m.path / "d.img", 0)
    assert e.value.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
    assert sha256(m.path / "d.img") == sha256(image)
    assert not [r for r in http_server.requests() if r["method"] not in ("GET", "HEAD")]


def test_tls_verify_no(mount, catalog, http_server):
    image = place_image(http_server, "disk.img", 2 * MiB)
    url = http_server.url("disk.img", https=True)
    write_entry(catalog, "noverify.img", f"source = {url}\ntls-verify = no\n")
    write_entry(catalog, "verify.img", f"source = {url}\n")
    m = mount(catalog)
    assert sha256(m.path / "noverify.img") == sha256(image)
    assert not (m.path / "verify.img").exists()
    m.wait_log(r"verify\.img.*certificate not trusted")


def test_ca_path(mount, catalog, http_server, test_ca, tmp_path):
    image = place_image(http_server, "disk.img", 2 * MiB)
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    (trusted / "test-ca.pem").write_bytes(test_ca.ca_cert.read_bytes())
    empty = tmp_path / "empty"
    empty.mkdir()
    url = http_server.url("disk.img", https=True)
    write_entry(catalog, "capath.img", f"source = {url}\nca-path = {trusted}\n")
    write_entry(catalog, "wrongpath.img", f"source = {url}\nca-path = {empty}\n")
    m = mount(catalog)
    assert sha256(m.path / "capath.img") == sha256(image)
    assert not (m.path / "wrongpath.img").exists()
    m.wait_log(r"wrongpath\.img.*certificate not trusted")


def test_user_agent(mount, catalog, http_server):
    image = place_image(http_server, "disk.img", 2 * MiB)
    write_entry(catalog, "ua.img", f"source = {http_server.url('disk.img')}\n"
                "user-agent = ShelfTester/9.1 (custom)\n")
    m = mount(catalog, "--cache-dir=none")
    assert sha256(m.path / "ua.img") == sha256(image)
    agents = {r["user_agent"] for r in http_server.headers_seen() if r["uri"] == "/disk.img"}
    assert agents == {"ShelfTester/9.1 (custom)"}
    http_server.headers_log_reset()
    write_entry(catalog, "plain.img", f"source = {http_server.url('disk.img')}\n")
    os.unlink(catalog / "ua.img.conf")
    wait_for(lambda: (m.path / "plain.img").exists(), scaled(30), "the new entry")
    assert sha256(m.path / "plain.img") == sha256(image)
    agents = {r["user_agent"] for r in http_server.headers_seen() if r["uri"] == "/disk.img"}
    assert agents and all(a.startswith("diskshelf/") for a in agents)
