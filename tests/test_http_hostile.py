"""A lying HTTP server (tests/http_hostile.py): absurd claimed sizes are
refused at open with a message, a claimed 1 PiB object neither blows up
the disk cache nor evicts other entries, and control characters in
ETag / Content-Range values reach the log escaped."""

import os
import pathlib
import sys

import pytest

from http_helpers import http_server, place_image  # noqa: F401
from peers import scaled, sha256, start_process, stop_process, wait_for, write_entry

HOSTILE = pathlib.Path(__file__).resolve().parent / "http_hostile.py"
MiB = 1 << 20


def pattern(offset, length):
    return bytes((offset + i) % 251 for i in range(length))


@pytest.fixture
def hostile_http(tmp_path):
    """Factory: hostile_http(scenario) -> the base URL of a running lying
    server; its requests are logged in tmp_path/hostile-SCENARIO.log."""
    procs = []

    def start(scenario):
        portfile = tmp_path / f"hostile-{scenario}"
        p = start_process([sys.executable, HOSTILE, portfile, scenario],
                          log_path=tmp_path / f"hostile-{scenario}.out")
        procs.append(p)
        wait_for(lambda: portfile.exists() or p.poll() is not None, scaled(15),
                 "the hostile HTTP server")
        assert p.poll() is None, (tmp_path / f"hostile-{scenario}.out").read_text()
        return f"http://127.0.0.1:{portfile.read_text()}/"

    yield start
    for p in procs:
        stop_process(p)


@pytest.mark.parametrize("scenario", ["too-big", "max", "range-max"])
def test_absurd_size_refused(mount, catalog, hostile_http, http_server, scenario):
    url = hostile_http(scenario)
    image = place_image(http_server, "disk.img", MiB)
    write_entry(catalog, "liar.img", f"source = {url}disk.img\n")
    write_entry(catalog, "good.img", f"source = {http_server.url('disk.img')}\n")
    m = mount(catalog)
    assert sha256(m.path / "good.img") == sha256(image)
    assert not (m.path / "liar.img").exists()
    m.wait_log(r"liar\.img.*claims \d+ bytes, more than the 1125899906842624 \(1 PiB\)")


def entry_status(m, name):
    """The status lines of one entry (from its name line to the next
    blank line)."""
    text = m.status()
    start = text.index(name)
    end = text.find("\n\n", start)
    return text[start:end if end >= 0 else len(text)]


def test_claimed_petabyte_harms_nothing(mount, catalog, hostile_http, http_server):
    """A server claiming exactly 1 PiB is served (its far bytes read
    right), and its 128 MiB cache bitmap is neither allocated nor charged:
    an entry already in the disk cache keeps its data."""
    image = place_image(http_server, "disk.img", 8 * MiB)
    write_entry(catalog, "good.img", f"source = {http_server.url('disk.img')}\n")
    m = mount(catalog, "--cache-size=130M")
    assert sha256(m.path / "good.img") == sha256(image)
    wait_for(lambda: "cache-present: 8388608 of" in entry_status(m, "good.img"), scaled(20),
             "the good entry to be cached")
    url = hostile_http("huge")
    write_entry(catalog, "liar.img", f"source = {url}disk.img\n")
    wait_for(lambda: (m.path / "liar.img").exists(), scaled(30), "the liar entry to appear")
    assert os.stat(m.path / "liar.img").st_size == 1 << 50
    with open(m.path / "liar.img", "rb") as f:
        f.seek((1 << 50) - 5000)
        assert f.read(5000) == pattern((1 << 50) - 5000, 5000)
        f.seek(123 << 30)
        assert f.read(4096) == pattern(123 << 30, 4096)
    assert "cache-present: 8388608 of" in entry_status(m, "good.img")
    rss_kb = int(next(line.split()[1] for line in open(f"/proc/{m.pid}/status")
                      if line.startswith("VmRSS:")))
    assert rss_kb < 512 * 1024, f"daemon RSS {rss_kb} kB"


def test_control_characters_escaped_in_log_and_status(mount, catalog, hostile_http):
    """ETag and Content-Range values with terminal escapes and control
    characters reach the log and status as \\xNN, never raw."""
    etag_url = hostile_http("evil-etag")
    range_url = hostile_http("evil-range")
    write_entry(catalog, "etag.img", f"source = {etag_url}disk.img\n")
    write_entry(catalog, "range.img", f"source = {range_url}disk.img\n")
    m = mount(catalog, "--cache-dir=none")
    with open(m.path / "etag.img", "rb") as f:
        assert f.read(4096) == pattern(0, 4096)
    # Its first read (the stack's magic-byte probe at open) fails.
    assert not (m.path / "range.img").exists()
    m.wait_log(r"range\.img.*Content-Range 'bytes 9-\\x1b\[2J\\x07\d+/4194304' does not match")
    status = m.status()
    assert 'http-etag: "abc\\x1b[31mRED\\x07\\x01def"' in status
    for text in (m.log(), status):
        assert "\x1b" not in text and "\x07" not in text and "\x01" not in text


def test_query_secrets_redacted(mount, catalog, http_server):
    """Signature-like query parameters of presigned URLs never reach the
    log or status; other parameters do."""
    image = place_image(http_server, "disk.img", MiB)
    query = ("?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=CREDSECRET"
             "&X-Amz-Signature=SIGSECRET&X-Amz-Security-Token=TOKSECRET&part=7")
    write_entry(catalog, "ok.img", f"source = {http_server.url('disk.img')}{query}\n")
    write_entry(catalog, "gone.img", f"source = {http_server.url('missing.img')}{query}"
                "&sig=AZURESECRET\n")
    m = mount(catalog)
    assert sha256(m.path / "ok.img") == sha256(image)
    m.wait_log(r"gone\.img.*missing\.img\?X-Amz-Algorithm=AWS4-HMAC-SHA256"
               r"&X-Amz-Credential=\*\*\*&X-Amz-Signature=\*\*\*"
               r"&X-Amz-Security-Token=\*\*\*&part=7&sig=\*\*\*.*HTTP 404")
    status = m.status()
    assert "X-Amz-Signature=***" in status and "part=7" in status
    for text in (m.log(), status):
        for secret in ("CREDSECRET", "SIGSECRET", "TOKSECRET", "AZURESECRET"):
            assert secret not in text
