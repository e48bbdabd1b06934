"""`diskshelf check` and `check --open` agree with the mount (issue 15,
item 5): the static checks the mount makes run in check; --open opens
every entry as the mount does and reports the same messages."""

import re
import subprocess
import tarfile

from conftest import assert_clean_output
from http_helpers import http_server  # noqa: F401
from peers import free_port, make_random_file, scaled, write_entry

STATIC = {"tls-on-plain-nbd", "tls-key-on-plain-nbd", "command-not-installed"}


def broken_catalog(catalog, tmp_path, http_server):
    """One good entry and one broken entry per case; returns the cases."""
    good = make_random_file(tmp_path / "good.img", 1 << 20, seed=41)
    make_random_file(http_server.root / "norange.img", 1 << 20, seed=42)
    tar = tmp_path / "images.tar"
    with tarfile.open(tar, "w") as t:
        t.add(good, arcname="disk.img")
    port = free_port()
    cases = {
        "http-404": f"source = {http_server.url('missing.img')}\n",
        "tar-member-missing": f"source = {tar}\nentry = nothere.img\n",
        "http-no-ranges": f"source = {http_server.url('noranges/norange.img')}\n",
        "raw-as-xz": f"source = {good}\ncompression = xz\n",
        "tls-on-plain-nbd": f"# plain NBD\nsource = nbd://127.0.0.1:{port}/x"
                            f"?tls-certificates={tmp_path}\n",
        "tls-key-on-plain-nbd": f"source = nbd://127.0.0.1:{port}/x\ntls-verify = no\n",
        "command-not-installed": "command = diskshelf-no-such-nbd-server --flag\n",
    }
    write_entry(catalog, "good.img", f"source = {good}\n")
    for name, text in cases.items():
        write_entry(catalog, name, text)
    return cases


def check(diskshelf, *args):
    r = subprocess.run([diskshelf, "check", *map(str, args)], capture_output=True,
                       text=True, timeout=scaled(120))
    assert_clean_output(r.stderr, "diskshelf check")
    return r


def rows(text):
    """{entry name: message} from FILE:LINE: message rows."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"(/\S+)/([^/]+)\.conf:(\d+): (.*)$", line)
        if m:
            out[m.group(2)] = (int(m.group(3)), m.group(4))
    return out


def test_static_checks_run_in_check(diskshelf, catalog, tmp_path, http_server):
    cases = broken_catalog(catalog, tmp_path, http_server)
    r = check(diskshelf, catalog)
    assert r.returncode == 1
    found = rows(r.stderr)
    assert set(found) == STATIC, r.stderr
    assert f"{len(cases) + 1 - len(STATIC)} entries ok, {len(STATIC)} broken" in r.stdout
    assert "not found" in found["command-not-installed"][1]
    assert "nbds" in found["tls-on-plain-nbd"][1]
    assert "nbds" in found["tls-key-on-plain-nbd"][1]
    # The line is that of the source key.
    assert found["tls-on-plain-nbd"][0] == 2


def test_check_open_reports_what_the_mount_leaves_out(diskshelf, mount, catalog, tmp_path,
                                                      http_server):
    cases = broken_catalog(catalog, tmp_path, http_server)
    r = check(diskshelf, "--open", "--timeout=20", catalog)
    assert r.returncode == 1, r.stderr
    assert "1 entry ok, 7 broken" in r.stdout, r.stdout + r.stderr
    found = rows(r.stderr)
    assert set(found) == set(cases), r.stderr
    assert "404" in found["http-404"][1]
    assert "nothere.img" in found["tar-member-missing"][1]
    assert "range" in found["http-no-ranges"][1]
    assert "xz" in found["raw-as-xz"][1]

    # The mount leaves out the same entries, with the same messages.
    m = mount(catalog)
    status = m.status()
    assert "entries: 1\nbroken: 7\n" in status
    mounted = rows("\n".join(line[len("broken-entry: "):] for line in status.splitlines()
                             if line.startswith("broken-entry: ")))
    assert mounted == found


def test_check_open_times_out_on_a_silent_server(diskshelf, catalog, tmp_path):
    """An HTTP server that accepts and never answers: check gives up on
    that entry after --timeout, and still reports the others."""
    import socket
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    try:
        good = make_random_file(tmp_path / "good.img", 1 << 20, seed=43)
        write_entry(catalog, "good.img", f"source = {good}\n")
        write_entry(catalog, "silent.img", f"source = http://127.0.0.1:{port}/x.img\n"
                    "timeout = 600\nretry-time = 600\n")
        r = check(diskshelf, "--open", "--timeout=2", catalog)
        assert r.returncode == 1
        assert "1 entry ok, 1 broken" in r.stdout
        assert re.search(r"silent\.img\.conf:1: not open after 2 s", r.stderr), r.stderr
    finally:
        listener.close()
