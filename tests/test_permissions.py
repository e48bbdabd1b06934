"""Users and permissions: entry keys owner/group/mode (and the daemon's
defaults) enforced through allow_other + default_permissions for another,
unprivileged user; without allow_other that user sees nothing; and the
daemon run by an unprivileged user (fusermount3, $XDG_CACHE_HOME, the
root-only read-ahead tweak skipped with one log line)."""

import os
import re
import signal
import subprocess

import pytest

from conftest import BAD_OUTPUT, is_mounted
from http_helpers import http_server, place_image  # noqa: F401
from peers import make_random_file, scaled, sha256, wait_for, write_entry
from service_helpers import NOBODY, OpenScratch, as_user

MiB = 1 << 20


@pytest.fixture
def scratch():
    s = OpenScratch()
    yield s.path
    # Root cannot even stat another user's FUSE mount: find ours in
    # mountinfo instead of walking the tree.
    with open("/proc/self/mountinfo") as f:
        targets = [line.split()[4] for line in f]
    for t in targets:
        if t.startswith(str(s.path) + "/"):
            subprocess.run(["fusermount3", "-uz", t], timeout=scaled(30))
    s.close()


def open_catalog(scratch, image):
    """A catalog other users can read, with three entries over image."""
    catalog = scratch / "catalog"
    catalog.mkdir()
    write_entry(catalog, "public.img", f"source = {image}\nmode = 0444\n")
    write_entry(catalog, "private.img", f"source = {image}\nowner = root\nmode = 0600\n")
    write_entry(catalog, "nobodys.img", f"source = {image}\nowner = nobody\nmode = 0400\n")
    for p in [catalog, *catalog.iterdir()]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    return catalog


def cat_as_nobody(path):
    return as_user(NOBODY, ["cat", path])


def test_allow_other_with_default_permissions(diskshelf, mount, scratch):
    image = make_random_file(scratch / "disk.raw", MiB)
    os.chmod(image, 0o644)
    catalog = open_catalog(scratch, image)
    mnt = scratch / "mnt"
    m = mount(catalog, "-o", "allow_other,default_permissions", name=str(mnt))
    st = os.stat(m.path / "private.img")
    assert (st.st_uid, st.st_mode & 0o777) == (0, 0o600)
    st = os.stat(m.path / "nobodys.img")
    assert (st.st_uid, st.st_mode & 0o777) == (NOBODY, 0o400)
    # A read-only entry never shows write bits, even if mode asks.
    assert os.stat(m.path / "public.img").st_mode & 0o777 == 0o444

    r = cat_as_nobody(m.path / "public.img")
    assert r.returncode == 0 and r.stdout == image.read_bytes()
    r = cat_as_nobody(m.path / "nobodys.img")
    assert r.returncode == 0 and r.stdout == image.read_bytes()
    r = cat_as_nobody(m.path / "private.img")
    assert r.returncode != 0 and b"Permission denied" in r.stderr
    # Root still reads everything.
    assert (m.path / "private.img").read_bytes() == image.read_bytes()
    # Whoever may read an image may prefetch it, and only they.
    binary = os.path.realpath(diskshelf)
    r = as_user(NOBODY, [binary, "prefetch", m.path / "public.img"])
    assert r.returncode == 0 and b"local" in r.stdout, r.stderr
    r = as_user(NOBODY, [binary, "prefetch", m.path / "private.img"])
    assert r.returncode == 1 and b"Permission denied" in r.stderr


def test_without_allow_other_another_user_sees_nothing(mount, scratch):
    image = make_random_file(scratch / "disk.raw", MiB)
    os.chmod(image, 0o644)
    catalog = open_catalog(scratch, image)
    m = mount(catalog, name=str(scratch / "mnt"))
    r = as_user(NOBODY, ["ls", m.path])
    assert r.returncode != 0 and b"Permission denied" in r.stderr
    r = cat_as_nobody(m.path / "public.img")
    assert r.returncode != 0 and b"Permission denied" in r.stderr
    assert sorted(os.listdir(m.path)) == ["nobodys.img", "private.img", "public.img"]


def test_daemon_defaults_for_owner_group_mode(mount, scratch):
    image = make_random_file(scratch / "disk.raw", MiB)
    catalog = scratch / "catalog"
    write_entry(catalog, "plain.img", f"source = {image}\nreadonly = yes\n")
    write_entry(catalog, "own.img", f"source = {image}\nreadonly = yes\nmode = 0400\n")
    m = mount(catalog, "--owner", "nobody", "-o", "group=65534,mode=0440",
              name=str(scratch / "mnt"))
    st = os.stat(m.path / "plain.img")
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (NOBODY, 65534, 0o440)
    st = os.stat(m.path / "own.img")
    assert (st.st_uid, st.st_mode & 0o777) == (NOBODY, 0o400)


def test_bad_owner_is_named_with_file_and_line(diskshelf, catalog, tmp_path):
    write_entry(catalog, "x.img", "source = /etc/hostname\nowner = no-such-user-here\n")
    r = subprocess.run([str(diskshelf), "check", str(catalog)], capture_output=True, text=True,
                       timeout=scaled(30))
    assert r.returncode == 1
    assert "x.img.conf:2: bad value for 'owner': no such user" in r.stderr
    r = subprocess.run([str(diskshelf), "--mode=999", str(catalog), str(tmp_path)],
                       capture_output=True, text=True, timeout=scaled(30))
    assert r.returncode == 2 and "--mode: '999' is not an octal mode" in r.stderr


def test_daemon_as_unprivileged_user(diskshelf, scratch, http_server):
    place_image(http_server, "disk.img", 4 * MiB)
    catalog = scratch / "catalog"
    write_entry(catalog, "disk.img", f"source = {http_server.url('disk.img')}\n")
    for p in [catalog, *catalog.iterdir()]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    home = scratch / "home"
    mnt = scratch / "mnt"
    for d in (home, mnt):
        d.mkdir()
        os.chown(d, NOBODY, NOBODY)
    log = home / "daemon.log"
    binary = os.path.realpath(diskshelf)
    env = dict(os.environ, HOME=str(home), XDG_CACHE_HOME=str(home / "cache"))
    env.pop("XDG_STATE_HOME", None)
    r = as_user(NOBODY, [binary, f"--log-file={log}", catalog, mnt], env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    pid = None
    try:
        assert is_mounted(mnt)
        # Without allow_other only the user who mounted sees the mount.
        assert as_user(NOBODY, ["true"]).returncode == 0
        with pytest.raises(PermissionError):
            os.listdir(mnt)
        status = as_user(NOBODY, ["cat", mnt / ".diskshelf-status"]).stdout.decode()
        pid = int(re.search(r"^pid: (\d+)$", status, re.M).group(1))
        with open(f"/proc/{pid}/status") as f:
            assert re.search(rf"^Uid:\s+{NOBODY}\s", f.read(), re.M)
        got = as_user(NOBODY, ["sha256sum", mnt / "disk.img"], env=env)
        assert got.stdout.split()[0].decode() == sha256(http_server.root / "disk.img")
        # The cache went to $XDG_CACHE_HOME.
        status = as_user(NOBODY, ["cat", mnt / ".diskshelf-status"]).stdout.decode()
        assert f"cache: {home / 'cache' / 'diskshelf'}" in status
        assert any((home / "cache" / "diskshelf").rglob("*"))
        r = as_user(NOBODY, ["fusermount3", "-u", mnt], env=env)
        assert r.returncode == 0, r.stderr
        wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 30, "the daemon to exit")
    finally:
        if pid and os.path.exists(f"/proc/{pid}"):
            os.kill(pid, signal.SIGTERM)
    text = log.read_text()
    assert len(re.findall(r"read-ahead stays at the kernel's default", text)) == 1, text
    assert not re.search(r": (error|warning): ", text), text
    assert not BAD_OUTPUT.search(text), text
