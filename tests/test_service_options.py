"""Issue 15, the start-up items: `--cache-size 64M` (value as the next
argument) works; a bad -o option fails before any entry is opened; a
second daemon on the same mountpoint is refused; --help names the man
pages and where logs go; background logs reach a file when there is no
syslog, and the journal stream when systemd gave one."""

import os
import re
import subprocess

from conftest import BAD_OUTPUT, is_mounted
from http_helpers import http_server, place_image  # noqa: F401
from peers import make_random_file, scaled, wait_for, write_entry
from service_helpers import NOBODY, OpenScratch, as_user

MiB = 1 << 20


def run(diskshelf, *args, **kw):
    return subprocess.run([str(diskshelf), *map(str, args)], capture_output=True, text=True,
                          timeout=scaled(kw.pop("timeout", 60)), stdin=subprocess.DEVNULL,
                          **kw)


def test_size_as_next_argument(mount, catalog, http_server):
    place_image(http_server, "disk.img", MiB)
    write_entry(catalog, "disk.img", f"source = {http_server.url('disk.img')}\n")
    m = mount(catalog, "--cache-size", "64M", "--memory-cache-size", "32M")
    (m.path / "disk.img").read_bytes()
    assert re.search(r"cache-used: \d+ of 67108864 bytes", m.status())


def test_bad_o_option_fails_before_opening(diskshelf, catalog, tmp_path, http_server):
    place_image(http_server, "disk.img", MiB)
    for i in range(3):
        write_entry(catalog, f"e{i}.img", f"source = {http_server.url('disk.img')}\n")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = run(diskshelf, catalog, mnt, "-o", "ro,foo=bar")
    assert r.returncode == 1
    assert "foo=bar" in r.stderr and "neither a diskshelf nor a FUSE option" in r.stderr
    assert "ready" not in r.stderr
    # No entry was opened: the server never heard from us.
    assert http_server.requests() == []
    assert not is_mounted(mnt)


def test_second_daemon_on_same_mountpoint_is_refused(diskshelf, mount, catalog, tmp_path):
    image = make_random_file(tmp_path / "disk.raw", MiB)
    write_entry(catalog, "a.img", f"source = {image}\n")
    m = mount(catalog)
    r = run(diskshelf, "-f", catalog, m.path)
    assert r.returncode == 1
    assert f"mountpoint {m.path}: diskshelf already serves diskshelf:{catalog}" in r.stderr
    assert "fusermount3 -u" in r.stderr
    with open("/proc/self/mountinfo") as f:
        assert sum(1 for line in f if line.split()[4] == str(m.path)) == 1
    assert (m.path / "a.img").read_bytes() == image.read_bytes()


def test_help_names_pages_and_logs(diskshelf):
    r = run(diskshelf, "--help")
    assert r.returncode == 0
    for words in ("diskshelf-catalog(5)", "diskshelf(1)", "--log-file", "syslog",
                  "/var/log/diskshelf.log", "$XDG_STATE_HOME/diskshelf/diskshelf.log",
                  "status [--json]", "prefetch [--background]", "--owner"):
        assert words in r.stdout, words


def test_background_without_syslog_logs_to_a_file(diskshelf):
    """Run by nobody so the fallback file is under $XDG_STATE_HOME (root's
    is /var/log/diskshelf.log).  This machine has no /dev/log."""
    assert not os.path.exists("/dev/log"), "this test needs a machine without syslog"
    s = OpenScratch()
    try:
        image = make_random_file(s.path / "disk.raw", MiB)
        os.chmod(image, 0o644)
        catalog = s.path / "catalog"
        write_entry(catalog, "a.img", f"source = {image}\n")
        os.chmod(catalog, 0o755)
        os.chmod(catalog / "a.img.conf", 0o644)
        home, mnt = s.path / "home", s.path / "mnt"
        for d in (home, mnt):
            d.mkdir()
            os.chown(d, NOBODY, NOBODY)
        env = dict(os.environ, HOME=str(home), XDG_STATE_HOME=str(home / "state"),
                   XDG_CACHE_HOME=str(home / "cache"))
        env.pop("JOURNAL_STREAM", None)
        r = as_user(NOBODY, [os.path.realpath(diskshelf), catalog, mnt], env=env)
        log = home / "state" / "diskshelf" / "diskshelf.log"
        try:
            assert r.returncode == 0, r.stderr
            assert f"no syslog socket (/dev/log): logging to {log}".encode() in r.stderr
        finally:
            as_user(NOBODY, ["fusermount3", "-u", mnt], env=env)
        wait_for(lambda: log.exists() and "unmounted" in log.read_text(), 30,
                 "the unmount in the log")
        text = log.read_text()
        assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d diskshelf\[\d+\]: info: mounted ",
                         text, re.M), text
        assert not BAD_OUTPUT.search(text), text
    finally:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                if line.split()[4].startswith(str(s.path)):
                    subprocess.run(["fusermount3", "-uz", line.split()[4]])
        s.close()


def test_background_under_systemd_keeps_the_journal_stream(diskshelf, catalog, tmp_path):
    """JOURNAL_STREAM naming our stderr means systemd's journal: the
    daemon keeps logging there after going to the background."""
    image = make_random_file(tmp_path / "disk.raw", MiB)
    write_entry(catalog, "a.img", f"source = {image}\n")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    journal = tmp_path / "journal"
    with open(journal, "wb") as f:
        st = os.fstat(f.fileno())
        env = dict(os.environ, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
        r = subprocess.run([str(diskshelf), f"--cache-dir={tmp_path / 'cache'}", str(catalog),
                            str(mnt)], stdout=f, stderr=f, env=env, timeout=scaled(60),
                           stdin=subprocess.DEVNULL)
    try:
        assert r.returncode == 0, journal.read_text()
        assert "no syslog socket" not in journal.read_text()
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], timeout=scaled(30))
    # "unmounted" is written by the background daemon, after the parent left.
    wait_for(lambda: "info: unmounted" in journal.read_text(), 30, "the unmount in the journal")
    # Each line carries its syslog level for the journal: <6> is info.
    assert re.search(r"^<6>diskshelf: info: mounted ", journal.read_text(), re.M)


def test_dead_mount_left_behind_is_explained(diskshelf, catalog, tmp_path):
    image = make_random_file(tmp_path / "disk.raw", MiB)
    write_entry(catalog, "a.img", f"source = {image}\n")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = subprocess.Popen([str(diskshelf), "-f", "--cache-dir=none", str(catalog), str(mnt)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: is_mounted(mnt), 30, "the mount")
        proc.kill()
        proc.wait(timeout=scaled(30))
        r = run(diskshelf, "-f", catalog, mnt)
        assert r.returncode in (1, 2)   # found while parsing, or by the mount check
        assert "daemon is gone is still there; remove it with fusermount3 -uz" in r.stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True,
                       timeout=scaled(30))
