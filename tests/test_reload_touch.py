"""Touching an entry's .conf reopens it: a new mtime is a new version of
the entry, the way to pick up a remote object that changed (issue 15,
item 3b)."""

import os
import re
import time

from peers import make_random_file, wait_for, write_entry

SIZE = 1 << 20


def etag(status):
    """The http-etag line of the status text."""
    m = re.search(r"^http-etag: (.*)$", status, re.M)
    return m.group(1) if m else None


def test_touch_reopens_a_changed_http_source(mount, catalog, nginx, tmp_path):
    image = make_random_file(nginx.root / "disk.img", SIZE, seed=31)
    old = image.read_bytes()
    conf = write_entry(catalog, "disk.img", f"source = {nginx.url('disk.img')}\n")
    m = mount(catalog, "--cache-dir=none")
    assert (m.path / "disk.img").read_bytes() == old
    old_etag = etag(m.status())
    assert old_etag

    # The object changes on the server (same size, new ETag).
    fresh = make_random_file(tmp_path / "new.img", SIZE, seed=32)
    later = time.time() + 100
    os.utime(fresh, (later, later))
    os.replace(fresh, image)
    new = image.read_bytes()
    assert new != old

    reloads = m.log().count("catalog reloaded")
    now = time.time() + 5
    os.utime(conf, (now, now))        # touch NAME.conf
    wait_for(lambda: m.log().count("catalog reloaded") > reloads, 30, "the reload")
    # The new version's stack opens at its first file open.
    assert (m.path / "disk.img").read_bytes() == new
    wait_for(lambda: etag(m.status()) not in (None, old_etag), 30, "the new ETag in status")
    assert re.search(r"disk\.img: ready", m.log().split("catalog reloaded")[-2])


def test_untouched_entry_keeps_its_stack(mount, catalog, nginx):
    """A reload for another entry does not reopen this one."""
    make_random_file(nginx.root / "disk.img", SIZE, seed=33)
    write_entry(catalog, "disk.img", f"source = {nginx.url('disk.img')}\n")
    m = mount(catalog, "--cache-dir=none")
    ready = m.log().count("disk.img: ready")
    write_entry(catalog, "other.img", f"source = {nginx.url('disk.img')}\n")
    wait_for(lambda: (m.path / "other.img").exists(), 30, "the other entry")
    assert m.log().count("disk.img: ready") == ready
