"""HTTP(S) images through the mount: whole-image checksum and random
reads over HTTP and HTTPS, redirects, TLS trust, servers without range
support, and read-ahead keeping requests few."""

import os
import random

from http_helpers import data_gets, http_server, place_image, protocols  # noqa: F401
from peers import sha256, write_entry

SIZE = 24 << 20


def check_random_reads(path, data, count=200, seed=3):
    rng = random.Random(seed)
    with open(path, "rb", buffering=0) as f:
        for _ in range(count):
            off = rng.randrange(0, len(data))
            n = rng.choice([1, 512, 4096, 65536, 300000, 2 << 20])
            f.seek(off)
            assert f.read(n) == data[off:off + n], f"mismatch at {off}+{n}"


def test_http_checksum_and_random_reads(mount, catalog, http_server):
    image = place_image(http_server, "disk.img", SIZE + 12345)
    write_entry(catalog, "disk.img", f"source = {http_server.url('disk.img')}\n")
    m = mount(catalog, "--cache-dir=none")
    st = os.stat(m.path / "disk.img")
    assert st.st_size == SIZE + 12345
    data = image.read_bytes()
    check_random_reads(m.path / "disk.img", data)
    assert sha256(m.path / "disk.img") == sha256(image)
    # Only ranges were fetched, with If-Range, and every one was a 206.
    gets = data_gets(http_server, "/disk.img")
    assert gets and all(r["status"] == 206 and r["range"].startswith("bytes=")
                        and r["if_range"] for r in gets)


def test_https_with_trusted_ca(mount, catalog, http_server, test_ca):
    image = place_image(http_server, "disk.img", SIZE)
    write_entry(catalog, "disk.img", f"source = {http_server.url('disk.img', https=True)}\n"
                f"ca-file = {test_ca.ca_cert}\n")
    m = mount(catalog)
    data = image.read_bytes()
    check_random_reads(m.path / "disk.img", data, count=50)
    assert sha256(m.path / "disk.img") == sha256(image)
    # nginx offers HTTP/2 over TLS (ALPN) and it is used.
    assert protocols(http_server) and set(protocols(http_server)) == {"HTTP/2.0"}


def test_https_untrusted_refused(mount, catalog, http_server, test_ca):
    place_image(http_server, "disk.img", 1 << 20)
    url = http_server.url("disk.img", https=True)
    write_entry(catalog, "bad.img", f"source = {url}\n")
    write_entry(catalog, "good.img", f"source = {url}\nca-file = {test_ca.ca_cert}\n")
    m = mount(catalog)
    assert not (m.path / "bad.img").exists()
    assert (m.path / "good.img").stat().st_size == 1 << 20
    m.wait_log(r"bad\.img.*certificate not trusted.*ca-file")


def test_redirect_followed_once(mount, catalog, http_server):
    image = place_image(http_server, "real.img", 6 << 20)
    write_entry(catalog, "r.img", f"source = {http_server.url('redirect/real.img')}\n")
    m = mount(catalog, "--cache-dir=none")
    assert sha256(m.path / "r.img") == sha256(image)
    redirects = [r for r in http_server.requests() if r["uri"] == "/redirect/real.img"]
    # One redirect at open; every data request went to the final URL.
    assert len(redirects) == 1 and redirects[0]["status"] == 302
    assert data_gets(http_server, "/real.img")


def test_server_without_ranges_refused(mount, catalog, http_server):
    place_image(http_server, "plain.img", 1 << 20)
    write_entry(catalog, "p.img", f"source = {http_server.url('noranges/plain.img')}\n")
    m = mount(catalog)
    assert not (m.path / "p.img").exists()
    m.wait_log(r"p\.img.*does not support range requests")


def test_size_from_range_get_when_head_refused(mount, catalog, http_server):
    image = place_image(http_server, "disk.img", 3 * (1 << 20) + 5)
    write_entry(catalog, "h.img", f"source = {http_server.url('nohead/disk.img')}\n")
    m = mount(catalog, "--cache-dir=none")
    assert os.stat(m.path / "h.img").st_size == 3 * (1 << 20) + 5
    assert sha256(m.path / "h.img") == sha256(image)
    rows = [r for r in http_server.requests() if r["uri"] == "/nohead/disk.img"]
    assert rows[0]["method"] == "HEAD" and rows[0]["status"] == 405
    assert rows[1]["range"] == "bytes=0-0" and rows[1]["status"] == 206


def test_credentials_headers_cookies_from_files(mount, catalog, http_server, tmp_path):
    image = place_image(http_server, "disk.img", 2 << 20)
    secret = "s3cret-Passw0rd"
    (tmp_path / "pw").write_text(secret + "\n")
    (tmp_path / "hdr").write_text("# extra headers\nX-Diskshelf-Test: yes\n")
    (tmp_path / "cookies").write_text("# cookies\nsession=abc123\n")
    url = http_server.url("secure/disk.img").replace("http://", "http://urluser:urlpass@")
    files = (f"password-file = {tmp_path / 'pw'}\nheader-file = {tmp_path / 'hdr'}\n"
             f"cookie-file = {tmp_path / 'cookies'}\n")
    write_entry(catalog, "c.img", f"source = {url}\nuser = alice\n{files}")
    write_entry(catalog, "nocookie.img", f"source = {url}\nuser = alice\n"
                f"password-file = {tmp_path / 'pw'}\nheader-file = {tmp_path / 'hdr'}\n")
    (tmp_path / "netscape").write_text("# Netscape HTTP Cookie File\n"
                                       "#HttpOnly_127.0.0.1\tFALSE\t/\tFALSE\t0\tsession\tabc123\n")
    write_entry(catalog, "netscape.img", f"source = {url}\nuser = alice\n"
                f"password-file = {tmp_path / 'pw'}\nheader-file = {tmp_path / 'hdr'}\n"
                f"cookie-file = {tmp_path / 'netscape'}\n")
    (tmp_path / "bad").write_text("wrong\n")
    write_entry(catalog, "badpw.img", f"source = {url}\nuser = alice\n"
                f"password-file = {tmp_path / 'bad'}\nheader-file = {tmp_path / 'hdr'}\n"
                f"cookie-file = {tmp_path / 'cookies'}\n")
    m = mount(catalog, "--cache-dir=none")
    assert sha256(m.path / "c.img") == sha256(image)
    assert sha256(m.path / "netscape.img") == sha256(image)
    assert not (m.path / "nocookie.img").exists()
    assert not (m.path / "badpw.img").exists()
    m.wait_log(r"badpw\.img.*HTTP 401.*password-file")
    m.wait_log(r"nocookie\.img.*HTTP 403")
    status, log = m.status(), m.log()
    for text in (status, log):
        assert "urlpass" not in text and secret not in text and "abc123" not in text
    assert "***@127.0.0.1" in status
