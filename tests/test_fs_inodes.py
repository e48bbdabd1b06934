"""The mount's own inode numbers (libfuse's low-level API): every entry
has a stable st_ino, the kernel's lookups (and READDIRPLUS rows) are
counted and forgotten (FORGET after the kernel drops its dentries), and a
reload's new version of an entry is a new inode while an open file keeps
the old one."""

import os
import re

import pytest

from peers import make_random_file, wait_for, write_entry

N = 300


def kernel_inodes(m):
    return int(re.search(r"^kernel-inodes: (\d+)$", m.status(), re.M).group(1))


def drop_dentries():
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("2\n")


@pytest.mark.skipif(os.geteuid() != 0, reason="drop_caches needs root")
def test_many_entries_keep_their_numbers_across_forget(mount, catalog, tmp_path):
    image = make_random_file(tmp_path / "disk.img", 64 << 10, seed=5)
    (catalog / "sub").mkdir()
    for i in range(N):
        write_entry(catalog, f"sub/e{i:03d}.img" if i % 2 else f"e{i:03d}.img",
                    f"source = {image}\n")
    m = mount(catalog)
    names = [f"sub/e{i:03d}.img" if i % 2 else f"e{i:03d}.img" for i in range(N)]

    first = {}
    for name in names:
        with open(m.path / name, "rb") as f:
            assert f.read(16) == image.read_bytes()[:16]
            first[name] = os.fstat(f.fileno()).st_ino
    assert len(set(first.values())) == N
    root_ino = os.stat(m.path).st_ino
    sub_ino = os.stat(m.path / "sub").st_ino
    assert root_ino == 1
    assert sub_ino not in first.values()
    # readdir shows the same numbers as stat.
    listed = {e.name: e.inode() for e in os.scandir(m.path / "sub")}
    assert all(listed[n.split("/")[1]] == first[n] for n in names if n.startswith("sub/"))
    assert kernel_inodes(m) >= N

    # The kernel forgets the dentries and inodes it does not use: FORGET.
    wait_for(lambda: (drop_dentries(), kernel_inodes(m) < N // 10)[1], 30,
             "the kernel's FORGETs")
    # A fresh lookup gets the number the entry had.
    for name in names:
        assert os.stat(m.path / name).st_ino == first[name]
    assert os.stat(m.path / "sub").st_ino == sub_ino
    assert kernel_inodes(m) >= N

    # A listing alone hands the kernel inodes (READDIRPLUS counts them as
    # lookups), with the entries' own numbers and sizes; they are
    # forgotten again like any other.
    wait_for(lambda: (drop_dentries(), kernel_inodes(m) < N // 10)[1], 30,
             "the kernel's FORGETs")
    before = kernel_inodes(m)
    rows = {e.name: e for e in os.scandir(m.path)}
    assert kernel_inodes(m) > before
    for name in names:
        if "/" not in name:
            assert rows[name].inode() == first[name]
            assert rows[name].stat().st_size == 64 << 10
    assert rows["sub"].inode() == sub_ino
    wait_for(lambda: (drop_dentries(), kernel_inodes(m) < N // 10)[1], 30,
             "the kernel's FORGETs of listed inodes")


def test_reload_gives_a_new_version_a_new_inode(mount, catalog, tmp_path):
    old = make_random_file(tmp_path / "old.img", 64 << 10, seed=6)
    new = make_random_file(tmp_path / "new.img", 128 << 10, seed=7)
    write_entry(catalog, "disk.img", f"source = {old}\n")
    write_entry(catalog, "keep.img", f"source = {old}\n")
    m = mount(catalog)
    keep_ino = os.stat(m.path / "keep.img").st_ino
    f = open(m.path / "disk.img", "rb")
    try:
        old_ino = os.fstat(f.fileno()).st_ino
        reloads = m.log().count("catalog reloaded")
        write_entry(catalog, "disk.img", f"source = {new}\n")
        wait_for(lambda: m.log().count("catalog reloaded") > reloads, 30, "the reload")
        # The name means the new version at once: a new inode, its size.
        st = os.stat(m.path / "disk.img")
        assert st.st_ino != old_ino
        assert st.st_size == 128 << 10
        assert (m.path / "disk.img").read_bytes() == new.read_bytes()
        # The open file keeps reading, and stat-ing, the old version.
        assert os.fstat(f.fileno()).st_size == 64 << 10
        assert os.fstat(f.fileno()).st_ino == old_ino
        assert f.read() == old.read_bytes()
        # An entry the reload carried over keeps its number.
        assert os.stat(m.path / "keep.img").st_ino == keep_ino
    finally:
        f.close()
    # Names cannot be removed or renamed: the catalog decides.
    with pytest.raises(OSError):
        os.unlink(m.path / "disk.img")
    with pytest.raises(OSError):
        os.rename(m.path / "disk.img", m.path / "other.img")
    assert (m.path / "disk.img").exists()
