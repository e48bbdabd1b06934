"""Redirects at open with credentials: the entry's user, password,
cookies and extra headers reach only the origin named in `source`
unless `send-credentials-on-redirect = yes`, and https -> http
redirects are refused.  Two real nginx servers: the second logs every
Authorization, Cookie, X-Diskshelf-Test and User-Agent it receives."""

from http_helpers import absent, header_server, http_server, place_image  # noqa: F401
from peers import sha256, write_entry

MiB = 1 << 20


def credential_lines(tmp_path):
    """Entry lines sending a user, a password, a header and a cookie."""
    (tmp_path / "pw").write_text("s3cret-Passw0rd\n")
    (tmp_path / "hdr").write_text("X-Diskshelf-Test: yes\n")
    (tmp_path / "cookies").write_text("session=abc123\n")
    return (f"user = alice\npassword-file = {tmp_path / 'pw'}\n"
            f"header-file = {tmp_path / 'hdr'}\ncookie-file = {tmp_path / 'cookies'}\n")


def test_credentials_stay_with_the_original_host(mount, catalog, http_server,
                                                 header_server, tmp_path):
    image = place_image(header_server, "disk.img", 3 * MiB + 7)
    http_server.redirect_away(header_server.url(""))
    write_entry(catalog, "d.img", f"source = {http_server.url('away/disk.img')}\n"
                + credential_lines(tmp_path))
    m = mount(catalog, "--cache-dir=none")
    assert sha256(m.path / "d.img") == sha256(image)
    seen = [r for r in header_server.headers_seen() if r["uri"] == "/disk.img"]
    assert seen and any(r["method"] == "GET" for r in seen)
    for r in seen:
        assert absent(r["authorization"]), r
        assert absent(r["cookie"]), r
        assert absent(r["x_diskshelf_test"]), r
    # The first server did get them (the redirect itself).
    first = [r for r in http_server.headers_seen() if r["uri"] == "/away/disk.img"]
    assert first and all(r["authorization"].startswith("Basic ") and r["cookie"] == "session=abc123"
                         and r["x_diskshelf_test"] == "yes" for r in first)
    m.wait_log(r"d\.img.*redirects to another host.*send-credentials-on-redirect")


def test_credentials_follow_redirect_when_asked(mount, catalog, http_server,
                                                header_server, tmp_path):
    image = place_image(header_server, "disk.img", 2 * MiB)
    http_server.redirect_away(header_server.url(""))
    write_entry(catalog, "d.img", f"source = {http_server.url('away/disk.img')}\n"
                + credential_lines(tmp_path) + "send-credentials-on-redirect = yes\n")
    m = mount(catalog, "--cache-dir=none")
    assert sha256(m.path / "d.img") == sha256(image)
    gets = [r for r in header_server.headers_seen()
            if r["uri"] == "/disk.img" and r["method"] == "GET"]
    assert gets and all(r["authorization"].startswith("Basic ") and r["cookie"] == "session=abc123"
                        and r["x_diskshelf_test"] == "yes" for r in gets)


def test_https_to_http_redirect_refused(mount, catalog, http_server, header_server,
                                        test_ca, tmp_path):
    place_image(header_server, "disk.img", MiB)
    http_server.redirect_away(header_server.url(""))
    write_entry(catalog, "down.img",
                f"source = {http_server.url('away/disk.img', https=True)}\n"
                f"ca-file = {test_ca.ca_cert}\n" + credential_lines(tmp_path)
                + "send-credentials-on-redirect = yes\n")
    write_entry(catalog, "ok.img", f"source = {header_server.url('disk.img')}\n")
    m = mount(catalog, "--cache-dir=none")
    assert not (m.path / "down.img").exists()
    assert (m.path / "ok.img").stat().st_size == MiB
    m.wait_log(r"down\.img.*redirects from https to http://127\.0\.0\.1.*refused")
    # Nothing at all reached the plain-http server for the refused entry.
    assert all(r["uri"] == "/disk.img" and absent(r["authorization"])
               for r in header_server.headers_seen())
