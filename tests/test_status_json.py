"""`diskshelf status [--json] MOUNTPOINT [ENTRY...]`: the JSON form is a
stable document (checked with a JSON parser, field by field), entries can
be picked by name, and states follow what happens to the source."""

import errno
import json
import os
import re
import subprocess

import pytest

from http_helpers import http_server, place_image  # noqa: F401
from peers import make_random_file, scaled, write_entry

MiB = 1 << 20

ENTRY_FIELDS = {"name", "source", "layers", "size", "writable", "state", "reason", "cache",
                "bytes_fetched", "requests", "requests_in_flight", "retries", "errors",
                "last_error", "nbd_connections", "torrent", "details"}


def status(diskshelf, *args, check=True):
    r = subprocess.run([str(diskshelf), "status", *map(str, args)], capture_output=True,
                       text=True, timeout=scaled(60))
    if check:
        assert r.returncode == 0, r.stderr
    return r


def test_json_document(diskshelf, mount, catalog, tmp_path, http_server):
    local = make_random_file(tmp_path / "local.raw", 3 * MiB)
    place_image(http_server, "remote.img", 4 * MiB)
    write_entry(catalog, "local.img", f"source = {local}\nreadonly = yes\n")
    write_entry(catalog, "vm/remote.img", f"source = {http_server.url('remote.img')}\n")
    write_entry(catalog, "broken.img", "sorce = /nowhere\n")
    m = mount(catalog)
    with open(m.path / "vm/remote.img", "rb") as f:
        f.read(MiB)

    doc = json.loads(status(diskshelf, "--json", m.path).stdout)
    assert doc["version"] == 1
    assert doc["mountpoint"] == str(m.path)
    assert doc["catalog"] == str(catalog)
    assert doc["pid"] == m.pid
    assert doc["entries_ok"] == 2 and doc["entries_broken"] == 1
    by_name = {e["name"]: e for e in doc["entries"]}
    assert set(by_name) >= {"local.img", "vm/remote.img"}
    for e in by_name.values():
        assert ENTRY_FIELDS <= set(e), ENTRY_FIELDS - set(e)
        assert e["torrent"] == {"peers": None, "pieces_have": None, "pieces_total": None}

    loc = by_name["local.img"]
    assert loc["layers"] == ["file"]
    assert loc["size"] == 3 * MiB and loc["writable"] is False
    assert loc["state"] == "ok" and loc["reason"] is None
    assert loc["cache"] is None and loc["bytes_fetched"] is None
    assert loc["errors"] == 0 and loc["last_error"] is None

    rem = by_name["vm/remote.img"]
    assert rem["layers"] == ["http"]
    assert rem["source"] == http_server.url("remote.img")
    assert rem["size"] == 4 * MiB and rem["state"] == "ok"
    assert rem["bytes_fetched"] >= MiB
    assert rem["requests"] >= 1 and rem["retries"] == 0
    assert rem["requests_in_flight"] >= 0
    assert rem["cache"]["directory"] == str(tmp_path / "cache")
    assert rem["cache"]["object_bytes"] == 4 * MiB
    assert MiB <= rem["cache"]["present_bytes"] <= 4 * MiB
    assert 0 < rem["cache"]["fill"] <= 1
    assert rem["details"]["http-url"] == http_server.url("remote.img")

    # Pick entries by name, relative or under the mountpoint.
    doc = json.loads(status(diskshelf, "--json", m.path, "vm/remote.img").stdout)
    assert [e["name"] for e in doc["entries"]] == ["vm/remote.img"]
    doc = json.loads(status(diskshelf, "--json", m.path, m.path / "local.img").stdout)
    assert [e["name"] for e in doc["entries"]] == ["local.img"]
    text = status(diskshelf, m.path, "local.img").stdout
    assert "[local.img]" in text and "[vm/remote.img]" not in text
    r = status(diskshelf, "--json", m.path, "nope.img", check=False)
    assert r.returncode == 1 and "nope.img: no such entry" in r.stderr
    json.loads(r.stdout)  # still a whole document


def test_changed_source_is_degraded_with_last_error(diskshelf, mount, catalog, http_server):
    image = place_image(http_server, "disk.img", 8 * MiB, seed=1)
    write_entry(catalog, "v.img", f"source = {http_server.url('disk.img')}\n")
    m = mount(catalog)
    with open(m.path / "v.img", "rb", buffering=0) as f:
        f.read(4096)
    fresh = place_image(http_server, "disk.img.new", 8 * MiB, seed=2)
    st = image.stat()
    os.utime(fresh, (st.st_mtime + 100, st.st_mtime + 100))
    os.replace(fresh, image)
    with open(m.path / "v.img", "rb", buffering=0) as f:
        f.seek(6 * MiB)
        with pytest.raises(OSError) as e:
            f.read(MiB)
        assert e.value.errno == errno.EIO
    (e,) = json.loads(status(diskshelf, "--json", m.path).stdout)["entries"]
    assert e["state"] == "degraded"
    assert "changed on the server" in e["reason"]
    assert e["errors"] >= 1
    assert "read" in e["last_error"]["message"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", e["last_error"]["time"])


def test_not_a_mount(diskshelf, tmp_path):
    r = status(diskshelf, "--json", tmp_path, check=False)
    assert r.returncode == 1
    assert "is not a diskshelf mount" in r.stderr
    r = status(diskshelf, check=False)
    assert r.returncode == 2 and "usage" in r.stderr
