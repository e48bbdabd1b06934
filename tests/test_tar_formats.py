"""tar members as files: ustar, GNU and pax archives made by the real tar,
long names (the case nbdkit's tar filter gets wrong), hard links, huge
sizes; every member checked against `tar -xO`."""

import errno
import os

import pytest

from peers import sha256, write_entry
from tar_helpers import (LONG_BASE, LONG_NAME, USTAR_LONG_NAME, huge_member_archive,
                         tar_create, tar_member_sha256, write_random)


def make_tree(d, long_name):
    """A small tree with members of many kinds."""
    write_random(d / "small.bin", 100_000, seed=1)
    write_random(d / "sub" / "a.txt", 3000, seed=2)
    write_random(d / long_name, 70_000, seed=3)
    (d / "zero.bin").write_bytes(b"")
    write_random(d / "odd.bin", 513, seed=4)
    os.link(d / "small.bin", d / "hard.bin")
    os.symlink("small.bin", d / "link")
    return ["small.bin", "sub", long_name.split("/")[0], "zero.bin", "odd.bin", "hard.bin",
            "link"]


@pytest.mark.parametrize("fmt", ["ustar", "gnu", "pax"])
def test_every_member_matches_tar_xO(fmt, tmp_path, catalog, mount):
    long_name = USTAR_LONG_NAME if fmt == "ustar" else LONG_NAME
    tree = tmp_path / "tree"
    names = make_tree(tree, long_name)
    archive = tar_create(tmp_path / f"a-{fmt}.tar", tree, names, fmt)
    members = {"small": "small.bin", "a": "sub/a.txt", "long": long_name,
               "zero": "zero.bin", "odd": "odd.bin"}
    for key, member in members.items():
        write_entry(catalog, key, f"source = {archive}\nentry = {member}\n")
    m = mount(catalog)
    for key, member in members.items():
        f = m.path / key
        assert f.stat().st_size == (tree / member).stat().st_size, member
        assert sha256(f) == tar_member_sha256(archive, member), member
        assert sha256(f) == sha256(tree / member), member


@pytest.mark.parametrize("fmt", ["gnu", "pax"])
def test_long_name_at_the_end_of_a_long_archive(fmt, tmp_path, catalog, mount):
    # Several long-named members in a row, the wanted one last: each one's
    # data must start after its own long-name record.
    tree = tmp_path / "tree"
    names = []
    for i in range(6):
        n = f"dir-{i}/" + LONG_BASE.replace(".img", f"-{i}.img")
        write_random(tree / n, 40_000 + 777 * i, seed=10 + i)
        names.append(n)
    archive = tar_create(tmp_path / "long.tar", tree, names, fmt)
    for i, n in enumerate(names):
        write_entry(catalog, f"m{i}", f"source = {archive}\nentry = {n}\n")
    m = mount(catalog)
    for i, n in enumerate(names):
        assert sha256(m.path / f"m{i}") == tar_member_sha256(archive, n)


@pytest.mark.parametrize("fmt", ["gnu", "pax"])
def test_hard_link_serves_the_target(fmt, tmp_path, catalog, mount):
    # tar stores a hard link without data ("link to ..."); the member's
    # bytes are those of its target, here also with a long target name
    # (a GNU ././@LongLink 'K' record, a pax `linkpath`).
    tree = tmp_path / "tree"
    write_random(tree / LONG_NAME, 50_000, seed=5)
    os.link(tree / LONG_NAME, tree / "alias.img")
    write_random(tree / "short.bin", 1000, seed=6)
    os.link(tree / "short.bin", tree / "short-alias.bin")
    archive = tar_create(tmp_path / "links.tar", tree,
                         ["images", "alias.img", "short.bin", "short-alias.bin"], fmt)
    write_entry(catalog, "alias", f"source = {archive}\nentry = alias.img\n")
    write_entry(catalog, "short", f"source = {archive}\nentry = short-alias.bin\n")
    m = mount(catalog)
    assert sha256(m.path / "alias") == sha256(tree / LONG_NAME)
    assert sha256(m.path / "short") == sha256(tree / "short.bin")


def test_dot_slash_names(tmp_path, catalog, mount):
    # `tar -C dir .` stores "./name"; either spelling finds it.
    tree = tmp_path / "tree"
    write_random(tree / "disk.img", 20_000, seed=7)
    archive = tar_create(tmp_path / "dot.tar", tree, ["."], "gnu")
    write_entry(catalog, "plain", f"source = {archive}\nentry = disk.img\n")
    write_entry(catalog, "dotted", f"source = {archive}\nentry = ./disk.img\n")
    m = mount(catalog)
    want = tar_member_sha256(archive, "./disk.img")
    assert sha256(m.path / "plain") == want
    assert sha256(m.path / "dotted") == want


@pytest.mark.parametrize("fmt", ["pax", "gnu"])
def test_member_over_8_gib(fmt, tmp_path, catalog, mount):
    # Sizes that do not fit ustar's octal field: pax `size` record, GNU
    # base-256.  The member after the huge one is found by skipping.
    size = 8 * 1024**3 + 12345
    archive, after = huge_member_archive(tmp_path, fmt, size)
    write_entry(catalog, "huge", f"source = {archive}\nentry = huge.img\n")
    write_entry(catalog, "after", f"source = {archive}\nentry = after.bin\n")
    m = mount(catalog)
    huge = m.path / "huge"
    assert huge.stat().st_size == size
    with open(huge, "rb") as f:
        assert f.read(8) == b"HEADMARK"
        f.seek(size // 2)
        assert f.read(4096) == bytes(4096)
        f.seek(size - 8)
        assert f.read() == b"TAILMARK"
    assert sha256(m.path / "after") == sha256(after)


def test_member_is_read_only(tmp_path, catalog, mount):
    tree = tmp_path / "tree"
    write_random(tree / "disk.img", 8192, seed=8)
    archive = tar_create(tmp_path / "ro.tar", tree, ["disk.img"], "gnu")
    before = sha256(archive)
    write_entry(catalog, "disk", f"source = {archive}\nentry = disk.img\n")
    m = mount(catalog)
    with pytest.raises(OSError) as e:
        fd = os.open(m.path / "disk", os.O_WRONLY)
        try:
            os.pwrite(fd, b"x" * 512, 0)
        finally:
            os.close(fd)
    assert e.value.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
    assert sha256(archive) == before
    assert sha256(m.path / "disk") == sha256(tree / "disk.img")
