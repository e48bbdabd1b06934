"""The catalog format: strict parsing, errors that name file, line and fix,
and broken entries left out without stopping the others."""

import subprocess

import pytest

from conftest import assert_clean_output
from peers import write_entry

# (entry text, pattern the error must contain).  {img} is a real image.
MALFORMED = [
    ("sorce = {img}\n", r":1: unknown key 'sorce'; fix: did you mean 'source'\?"),
    ("source = {img}\nsource = {img}\n", r":2: duplicate key 'source'"),
    ("readonly = yes\n", r"no source; fix: add a line 'source ="),
    ("source = relative/disk.img\n", r":1: bad value for 'source': 'relative/disk.img' is not an absolute path"),
    ("source = /nonexistent/disk.img\n", r":1: bad value for 'source': cannot use '/nonexistent/disk.img'"),
    ("source = {img}\nreadonly = maybe\n", r":2: bad value for 'readonly': not a yes/no value; fix: give yes or no"),
    ("source = {img}\ntimeout = soon\n", r":2: bad value for 'timeout': not a number of seconds"),
    ("source = {img}\ncompression = bzip9\n", r":2: bad value for 'compression': unknown compression; fix: give auto, none or xz"),
    ("just some words\n", r":1: expected 'key = value'"),
    ("source =\n", r":1: empty value for 'source'"),
    ("source = gopher://example/disk.img\n", r"unsupported URI scheme"),
    ("source = {img}\nconnections = 0\n", r":2: bad value for 'connections': not a whole number from 1 to 1024"),
    ("source = {img}\nscan-limit = 12Q\n", r":2: bad value for 'scan-limit': not a size"),
    ("command = qemu-nbd 'unbalanced\n", r":1: bad value for 'command': unbalanced quotes"),
    ("source = {img}\ncommand = qemu-nbd x\n", r"both 'source' and 'command' are set"),
    ("source = {dir}\n", r"is a directory, not an image"),
    ("source = {img}\nca-file = /nonexistent.pem\n", r":2: bad value for 'ca-file': cannot use '/nonexistent.pem'"),
]


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(b"diskshelf" * 1000)
    return path


@pytest.mark.parametrize("text,pattern", MALFORMED)
def test_check_reports_malformed_entry(diskshelf, catalog, image, text, pattern, tmp_path):
    write_entry(catalog, "bad.img", text.format(img=image, dir=tmp_path))
    write_entry(catalog, "good.img", f"source = {image}\n")
    r = subprocess.run([diskshelf, "check", catalog], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1, r
    assert_clean_output(r.stderr)
    assert "bad.img.conf" in r.stderr
    import re
    assert re.search(pattern, r.stderr), r.stderr
    assert "1 entry ok, 1 broken" in r.stdout


def test_check_reports_every_bad_line(diskshelf, catalog, image):
    write_entry(catalog, "many.img",
                f"# comment\n\nsource = {image}\nfoo = 1\nreadonly = perhaps\nbar baz\n")
    r = subprocess.run([diskshelf, "check", catalog], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert_clean_output(r.stderr)
    assert ":4: unknown key 'foo'" in r.stderr
    assert ":5: bad value for 'readonly'" in r.stderr
    assert ":6: expected 'key = value'" in r.stderr


def test_check_accepts_good_catalog(diskshelf, catalog, image):
    write_entry(catalog, "a.img", f"# a comment\nsource = {image}\n\nreadonly = yes\n")
    write_entry(catalog, "sub/dir/b.img", f"source = file://{image}\ntimeout = 2.5\n")
    (catalog / "README").write_text("not an entry\n")
    r = subprocess.run([diskshelf, "check", catalog], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "2 entries ok, 0 broken" in r.stdout


def test_check_missing_catalog_directory(diskshelf, tmp_path):
    r = subprocess.run([diskshelf, "check", tmp_path / "nope"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 1
    assert_clean_output(r.stderr)
    assert "No such file or directory" in r.stderr


def test_nul_byte_in_entry(diskshelf, catalog, image):
    (catalog / "bin.img.conf").write_bytes(b"source = " + str(image).encode() + b"\n\x00junk\n")
    r = subprocess.run([diskshelf, "check", catalog], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert_clean_output(r.stderr)
    assert ":2: contains a NUL byte" in r.stderr


def test_broken_entry_left_out_of_mount(mount, catalog, image):
    write_entry(catalog, "good.img", f"source = {image}\n")
    write_entry(catalog, "bad.img", "sorce = x\n")
    write_entry(catalog, "gone.img", "source = /nonexistent\n")
    m = mount(catalog)
    assert sorted(p.name for p in m.path.iterdir()) == ["good.img"]
    assert (m.path / "good.img").read_bytes() == image.read_bytes()
    log = m.log()
    assert "bad.img.conf:1: unknown key 'sorce'" in log
    assert "gone.img.conf:1: bad value for 'source'" in log
    assert "broken: 2" in m.status()
