"""Archives the tar layer must refuse, each with a message that says what
is wrong: members not found (with the closest names), sparse members,
directories, symbolic links, damaged, truncated and hostile archives, and
the scan limit.  None of them may crash the daemon or disturb the good
entries beside them."""

import random
import re
import shutil

import pytest

from peers import run, sha256, write_entry
from tar_helpers import LONG_NAME, tar_create, tar_member_sha256, write_random, write_sparse

MIB = 1024 * 1024


@pytest.fixture
def tree(tmp_path):
    t = tmp_path / "tree"
    write_random(t / "disk1.vmdk", 200_000, seed=1)
    write_random(t / "disk2.vmdk", 100_000, seed=2)
    write_random(t / "vm.ovf", 3000, seed=3)
    write_random(t / "notes" / "readme.txt", 500, seed=4)
    write_random(t / LONG_NAME, 9000, seed=5)
    (t / "link").symlink_to("disk1.vmdk")
    return t


NAMES = ["vm.ovf", "disk1.vmdk", "disk2.vmdk", "notes", "images", "link"]


def broken_line(m, entry):
    """The daemon's log line that says why `entry` was left out."""
    for line in m.log().splitlines():
        if f"{entry}: " in line and "tar: " in line:
            return line
    raise AssertionError(f"no error logged for {entry}:\n{m.log()}")


def test_member_not_found_lists_close_names(tree, tmp_path, catalog, mount):
    archive = tar_create(tmp_path / "a.tar", tree, NAMES, "gnu")
    write_entry(catalog, "typo", f"source = {archive}\nentry = disk1.vmkd\n")
    write_entry(catalog, "case", f"source = {archive}\nentry = VM.OVF\n")
    write_entry(catalog, "nodir", f"source = {archive}\nentry = disk2.vmdk.bak\n")
    write_entry(catalog, "good", f"source = {archive}\nentry = disk2.vmdk\n")
    m = mount(catalog)
    assert not (m.path / "typo").exists()
    line = broken_line(m, "typo")
    assert "no member 'disk1.vmkd'" in line
    closest = line.split("closest: ", 1)[1]
    assert closest.startswith("'disk1.vmdk'"), line
    assert "members" in line
    assert broken_line(m, "case").split("closest: ", 1)[1].startswith("'vm.ovf'")
    assert "'disk2.vmdk'" in broken_line(m, "nodir").split("closest: ", 1)[1]
    assert sha256(m.path / "good") == sha256(tree / "disk2.vmdk")


@pytest.mark.parametrize("fmt,version", [("gnu", None), ("pax", "1.0"), ("pax", "0.1")])
def test_sparse_member_refused(fmt, version, tmp_path, catalog, mount):
    t = tmp_path / "tree"
    write_sparse(t / "sparse.img", 20 * MIB, [0, 9 * MIB], seed=9)
    write_random(t / "dense.bin", 4096, seed=10)
    extra = ["--sparse"] + ([f"--sparse-version={version}"] if version else [])
    archive = tar_create(tmp_path / "s.tar", t, ["sparse.img", "dense.bin"], fmt, extra=extra)
    write_entry(catalog, "sparse", f"source = {archive}\nentry = sparse.img\n")
    write_entry(catalog, "dense", f"source = {archive}\nentry = dense.bin\n")
    m = mount(catalog)
    assert not (m.path / "sparse").exists()
    assert "stored sparse" in broken_line(m, "sparse")
    assert "without --sparse" in broken_line(m, "sparse")
    # The member after the sparse one is still found at the right place.
    assert sha256(m.path / "dense") == tar_member_sha256(archive, "dense.bin")


def test_directory_and_symlink_refused(tree, tmp_path, catalog, mount):
    archive = tar_create(tmp_path / "a.tar", tree, NAMES, "pax")
    write_entry(catalog, "dir", f"source = {archive}\nentry = notes\n")
    write_entry(catalog, "sym", f"source = {archive}\nentry = link\n")
    m = mount(catalog)
    assert "is a directory" in broken_line(m, "dir")
    line = broken_line(m, "sym")
    assert "symbolic link to 'disk1.vmdk'" in line


def test_damaged_truncated_and_foreign_archives(tree, tmp_path, catalog, mount):
    archive = tar_create(tmp_path / "a.tar", tree, NAMES, "gnu")
    data = archive.read_bytes()
    # A damaged header (checksum no longer matches) in the middle.
    damaged = bytearray(data)
    second = 512 + (3000 + 511) // 512 * 512     # disk1.vmdk's header
    damaged[second + 10:second + 20] = b"!DAMAGED!!"
    (tmp_path / "damaged.tar").write_bytes(damaged)
    # Cut inside disk1.vmdk's data, and cut between headers.
    (tmp_path / "cut-data.tar").write_bytes(data[:second + 512 + 50_000])
    (tmp_path / "cut-hdr.tar").write_bytes(data[:second + 512 + 200_192 + 100])
    (tmp_path / "junk.tar").write_bytes(random.Random(1).randbytes(100_000))
    (tmp_path / "empty.tar").write_bytes(b"")
    (tmp_path / "zeros.tar").write_bytes(bytes(10240))
    cases = {
        "damaged": ("damaged.tar", "disk2.vmdk", "Damaged tar archive"),
        "cutdata": ("cut-data.tar", "disk1.vmdk", "truncated"),
        "cuthdr": ("cut-hdr.tar", "disk2.vmdk", "runcated"),
        "junk": ("junk.tar", "disk1.vmdk", "not a tar archive"),
        "empty": ("empty.tar", "disk1.vmdk", "empty"),
        "zeros": ("zeros.tar", "disk1.vmdk", "no member"),
    }
    for name, (f, member, _) in cases.items():
        write_entry(catalog, name, f"source = {tmp_path / f}\nentry = {member}\n")
    # The part before the damage still serves its members.
    write_entry(catalog, "before", f"source = {tmp_path / 'damaged.tar'}\nentry = vm.ovf\n")
    m = mount(catalog)
    for name, (f, member, words) in cases.items():
        assert not (m.path / name).exists(), name
        line = broken_line(m, name)
        assert words in line, line
        assert f in line, line
    assert sha256(m.path / "before") == sha256(tree / "vm.ovf")


def test_scan_limit(tmp_path, catalog, mount):
    t = tmp_path / "tree"
    names = []
    for i in range(300):
        n = f"f{i:03d}.bin"
        write_random(t / n, 2000, seed=i)
        names.append(n)
    archive = tar_create(tmp_path / "many.tar", t, names, "gnu")
    write_entry(catalog, "limited", f"source = {archive}\nentry = f299.bin\nscan-limit = 256K\n")
    write_entry(catalog, "enough", f"source = {archive}\nentry = f299.bin\nscan-limit = 4M\n")
    write_entry(catalog, "early", f"source = {archive}\nentry = f010.bin\nscan-limit = 256K\n")
    m = mount(catalog)
    line = broken_line(m, "limited")
    assert "scan-limit" in line and "raise" in line
    assert sha256(m.path / "enough") == sha256(t / "f299.bin")
    assert sha256(m.path / "early") == sha256(t / "f010.bin")


def mutate(data, rng):
    """One hostile variant of an archive: random bytes, a header field
    rewritten with a valid checksum, or a cut."""
    d = bytearray(data)
    kind = rng.random()
    if kind < 0.4:
        for _ in range(rng.randint(1, 8)):
            d[rng.randrange(min(len(d), 8192))] = rng.randrange(256)
    elif kind < 0.85:
        blk = rng.randrange(0, min(len(d), 16384) // 512) * 512
        start, length = rng.choice([(124, 12), (0, 100), (156, 1), (345, 155), (157, 100)])
        for k in range(length):
            if rng.random() < 0.4:
                d[blk + start + k] = rng.choice(b"0123456777\x00 \x80\xff/x")
        h = d[blk:blk + 512]
        h[148:156] = b" " * 8
        d[blk + 148:blk + 156] = b"%06o\x00 " % sum(h)
    else:
        d = d[:rng.randrange(len(d))]
    return bytes(d)


def test_hostile_archives_do_not_crash(tree, tmp_path, catalog, mount):
    # Many mutated archives in one catalog: every one is either left out
    # with a message or served; the daemon survives and the good entry
    # next to them keeps reading right.
    sources = [tar_create(tmp_path / f"src-{fmt}.tar", tree, NAMES, fmt).read_bytes()
               for fmt in ("gnu", "pax")]
    sparse_tree = tmp_path / "sp"
    write_sparse(sparse_tree / "sparse.img", 4 * MIB, [MIB], seed=3)
    sources.append(tar_create(tmp_path / "src-sp.tar", sparse_tree, ["sparse.img"], "pax",
                              extra=["--sparse"]).read_bytes())
    rng = random.Random(2026)
    members = ["disk1.vmdk", "disk2.vmdk", "vm.ovf", LONG_NAME, "sparse.img"]
    for i in range(60):
        f = tmp_path / "hostile" / f"h{i:02d}.tar"
        f.parent.mkdir(exist_ok=True)
        f.write_bytes(mutate(rng.choice(sources), rng))
        write_entry(catalog, f"h{i:02d}", f"source = {f}\nentry = {rng.choice(members)}\n")
    good = tmp_path / "good.tar"
    shutil.copy(tmp_path / "src-pax.tar", good)
    write_entry(catalog, "good", f"source = {good}\nentry = disk1.vmdk\n")
    m = mount(catalog)
    served = 0
    for i in range(60):
        p = m.path / f"h{i:02d}"
        if p.exists():
            served += 1
            with open(p, "rb") as fh:
                while fh.read(1 << 20):
                    pass
        else:
            assert broken_line(m, f"h{i:02d}")
    assert sha256(m.path / "good") == sha256(tree / "disk1.vmdk")
    log = m.log()
    assert not re.search(r"Sanitizer|runtime error|Assertion", log), log
    assert m.pid and (m.path / "good").exists()


def test_multi_volume_pieces_refused(tmp_path, catalog, mount):
    # GNU multi-volume: a member split across volumes is neither served
    # cut short from the first volume nor from its continuation.
    t = tmp_path / "tree"
    write_random(t / "a.bin", 300_000, seed=1)
    write_random(t / "b.bin", 1_500_000, seed=2)
    vols = [tmp_path / f"v{i}.tar" for i in (1, 2, 3)]
    args = ["tar", "--format=gnu", "-c", "-M", "-L", "1024"]
    for v in vols:
        args += ["-f", str(v)]
    run(args + ["-C", str(t), "a.bin", "b.bin"])
    write_entry(catalog, "a1", f"source = {vols[0]}\nentry = a.bin\n")
    write_entry(catalog, "b1", f"source = {vols[0]}\nentry = b.bin\n")
    write_entry(catalog, "b2", f"source = {vols[1]}\nentry = b.bin\n")
    m = mount(catalog)
    assert sha256(m.path / "a1") == sha256(t / "a.bin")
    assert "truncated" in broken_line(m, "b1")
    assert "not a regular file" in broken_line(m, "b2") or "multi-volume" in broken_line(m, "b2")


def special_header(name, size, typ):
    """A raw tar header block of type typ ('x' pax, 'L' GNU long name)
    claiming `size` bytes (octal, or GNU base-256 when it does not fit),
    with a valid checksum."""
    h = bytearray(512)
    h[0:len(name)] = name
    h[100:108] = b"0000644\x00"
    h[108:116] = b"0000000\x00"
    h[116:124] = b"0000000\x00"
    h[124:136] = b"%011o\x00" % size if size < 8 ** 11 else b"\x80" + size.to_bytes(11, "big")
    h[136:148] = b"00000000000\x00"
    h[156:157] = typ
    h[257:265] = b"ustar\x0000" if typ == b"x" else b"ustar  \x00"
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\x00 " % sum(h)
    return bytes(h)


@pytest.mark.parametrize("typ,what,size", [
    (b"x", "pax extended header", 3 << 30),
    (b"L", "GNU long name", 1 << 40),
])
def test_huge_special_header_refused(typ, what, size, tree, tmp_path, catalog, mount):
    # A real archive of vm.ovf, then a hostile header claiming gigabytes
    # (none of which are in the file) before the member asked for.
    first = tar_create(tmp_path / "first.tar", tree, ["vm.ovf"], "gnu").read_bytes()
    first = first[:512 + (3000 + 511) // 512 * 512]      # without the end blocks
    name = b"././@PaxHeader" if typ == b"x" else b"././@LongLink"
    hostile = tmp_path / "hostile.tar"
    hostile.write_bytes(first + special_header(name, size, typ) + bytes(8192))
    write_entry(catalog, "bad", f"source = {hostile}\nentry = disk1.vmdk\n")
    write_entry(catalog, "before", f"source = {hostile}\nentry = vm.ovf\n")
    m = mount(catalog)
    line = broken_line(m, "bad")
    assert f"header at offset {len(first)}: a {what} claiming {size} bytes, " \
        "more than the 1 MiB accepted" in line, line
    assert sha256(m.path / "before") == sha256(tree / "vm.ovf")


def test_control_characters_in_member_names_are_escaped(tmp_path, catalog, mount):
    # Names from the archive reach messages (closest names, symbolic link
    # and hard link targets): their control characters are escaped, so
    # the archive can neither forge a log line nor send a terminal escape.
    import io
    import tarfile
    forged = "diskshelf: info: FORGED line"
    evil = f"disk.img\n{forged}\x1b[2J"
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w", format=tarfile.GNU_FORMAT) as tf:
        data = b"x" * 1000
        info = tarfile.TarInfo(evil)
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("sym.img")
        link.type = tarfile.SYMTYPE
        link.linkname = f"target\n{forged}\x07"
        tf.addfile(link)
        hard = tarfile.TarInfo("hard.img")
        hard.type = tarfile.LNKTYPE
        hard.linkname = f"gone\r{forged}\x1b]0;title\x07"
        tf.addfile(hard)
    write_entry(catalog, "typo", f"source = {archive}\nentry = disk.im\n")
    write_entry(catalog, "sym", f"source = {archive}\nentry = sym.img\n")
    write_entry(catalog, "hard", f"source = {archive}\nentry = hard.img\n")
    m = mount(catalog)
    log = m.log()
    assert "closest: 'disk.img\\x0adiskshelf: info: FORGED line\\x1b[2J'" in broken_line(m, "typo")
    assert "symbolic link to 'target\\x0adiskshelf: info: FORGED line\\x07'" in \
        broken_line(m, "sym")
    assert "hard link to 'gone\\x0ddiskshelf: info: FORGED line\\x1b]0;title\\x07'" in \
        broken_line(m, "hard")
    assert not [line for line in log.splitlines() if line.startswith(forged)], log
    assert not any(c in log for c in "\x1b\x07\r"), repr(log)
