"""Lifecycle races: a reload under a streaming reader, removing the entry
of an open file, and a daemon killed mid-read then started again on the
same cache directory."""

import os
import signal
import subprocess
import sys
import threading

import pytest

from conftest import is_mounted
from peers import check_random_reads, make_random_file, scaled, sha256, wait_for, write_entry

SIZE = 12 << 20
CHUNK = 256 << 10


def two_versions(kind, tmp_path, request):
    """(conf A, conf B, bytes A, bytes B) of one entry."""
    if kind == "local":
        a = make_random_file(tmp_path / "a.img", SIZE, seed=51)
        b = make_random_file(tmp_path / "b.img", SIZE - (1 << 20), seed=52)
        return f"source = {a}\n", f"source = {b}\n", a.read_bytes(), b.read_bytes()
    nginx = request.getfixturevalue("nginx")
    a = make_random_file(nginx.root / "a.img", SIZE, seed=51)
    b = make_random_file(nginx.root / "b.img", SIZE - (1 << 20), seed=52)
    return (f"source = {nginx.url('a.img')}\n", f"source = {nginx.url('b.img')}\n",
            a.read_bytes(), b.read_bytes())


@pytest.mark.parametrize("kind", ["local", "http"])
def test_reload_under_a_streaming_reader(mount, catalog, tmp_path, request, kind):
    """The reader keeps streaming the old source to its end with the right
    bytes while the entry changes under it; a new open reads the new one."""
    conf_a, conf_b, data_a, data_b = two_versions(kind, tmp_path, request)
    write_entry(catalog, "x.img", conf_a)
    m = mount(catalog, "--cache-dir=none")
    path = m.path / "x.img"
    got = bytearray()
    halfway = threading.Event()
    proceed = threading.Event()
    failure = []

    def stream():
        try:
            with open(path, "rb") as f:
                while True:
                    chunk = f.read(CHUNK)
                    if not chunk:
                        return
                    got.extend(chunk)
                    if len(got) >= SIZE // 3 and not halfway.is_set():
                        halfway.set()
                        proceed.wait(scaled(60))
        except Exception as e:       # reported below
            failure.append(e)
            halfway.set()

    reader = threading.Thread(target=stream)
    reader.start()
    try:
        assert halfway.wait(scaled(60))
        write_entry(catalog, "x.img", conf_b)
        wait_for(lambda: os.stat(path).st_size == len(data_b), 30, "the new version")
        # A new open reads the new source while the old reader is mid-way.
        assert sha256(path) == sha256_bytes(data_b)
    finally:
        proceed.set()
        reader.join(scaled(120))
    assert not failure, failure
    assert len(got) == len(data_a) and bytes(got) == data_a
    assert (path.read_bytes()) == data_b


def sha256_bytes(data):
    import hashlib
    return hashlib.sha256(data).hexdigest()


def test_removed_entry_keeps_serving_its_open_file(mount, catalog, nginx):
    """An HTTP entry removed from the catalog: its open file reads every
    byte until closed; then the stack is closed."""
    image = make_random_file(nginx.root / "disk.img", SIZE, seed=53)
    data = image.read_bytes()
    write_entry(catalog, "gone.img", f"source = {nginx.url('disk.img')}\n")
    m = mount(catalog, "--cache-dir=none")
    path = m.path / "gone.img"
    with open(path, "rb", buffering=0) as f:
        assert f.read(4096) == data[:4096]
        (catalog / "gone.img.conf").unlink()
        wait_for(lambda: not path.exists(), 30, "the entry to leave")
        assert "gone.img: closed" not in m.log()
        f.seek(0)
        assert f.read() == data
        assert os.fstat(f.fileno()).st_size == SIZE
    m.wait_log(r"gone\.img: closed", timeout=30)
    assert os.listdir(m.path) == []


def test_sigkill_mid_read_then_restart_on_the_same_cache(mount, catalog, nginx, tmp_path):
    """Killed while filling the disk cache, started again on it: every
    cached object is valid or dropped, and what is read is right."""
    image = make_random_file(nginx.root / "disk.img", SIZE * 2, seed=54)
    data = image.read_bytes()
    cache = tmp_path / "cache"
    write_entry(catalog, "disk.img", f"source = {nginx.url('disk.img')}\n")
    m = mount(catalog, f"--cache-dir={cache}")
    reader = subprocess.Popen([sys.executable, "-c",
                               "import sys\nf = open(sys.argv[1], 'rb')\n"
                               "while f.read(1 << 20): pass\n", str(m.path / "disk.img")],
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: nginx.bytes_sent("/disk.img") > SIZE // 2 or reader.poll() is not None,
                 60, "the reader to be part-way")
        m.expect_unclean = True
        os.kill(m.pid, signal.SIGKILL)
        m.proc.wait(timeout=scaled(30))
        reader.wait(timeout=scaled(60))
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
    m.stop()
    assert not is_mounted(m.path)
    sent_before = nginx.bytes_sent("/disk.img")

    m2 = mount(catalog, f"--cache-dir={cache}")
    check_random_reads(m2.path / "disk.img", data, count=60)
    assert sha256(m2.path / "disk.img") == sha256(image)
    # The cache survived at least in part (or was dropped whole): either
    # way nothing wrong came out of it, and reading did not fetch the
    # image twice over.
    assert nginx.bytes_sent("/disk.img") - sent_before <= 2 * len(data)
