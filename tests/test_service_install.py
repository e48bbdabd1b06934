"""`meson install` puts the binary, the man pages and the units in the
usual places; each man page renders with man -l; the systemd units pass
`systemd-analyze verify`."""

import os
import pathlib
import re
import shutil
import subprocess

import pytest

from peers import scaled

PREFIX = "/usr/local"


@pytest.fixture(scope="module")
def installed(diskshelf, tmp_path_factory):
    """A DESTDIR install of the build that made DISKSHELF_BIN."""
    build = pathlib.Path(diskshelf).resolve().parent
    dest = tmp_path_factory.mktemp("destdir")
    r = subprocess.run(["meson", "install", "-C", str(build), "--no-rebuild", "--quiet",
                        "--destdir", str(dest)], capture_output=True, text=True,
                       timeout=scaled(300))
    assert r.returncode == 0, r.stdout + r.stderr
    prefix = subprocess.run(["meson", "introspect", "--buildoptions", str(build)],
                            capture_output=True, text=True, timeout=scaled(60))
    import json
    opts = {o["name"]: o["value"] for o in json.loads(prefix.stdout)}
    return dest, pathlib.Path(opts["prefix"])


def test_files_in_usual_places(installed):
    dest, prefix = installed
    root = dest / prefix.relative_to("/")
    binary = root / "bin" / "diskshelf"
    assert binary.is_file() and os.access(binary, os.X_OK)
    assert (root / "share/man/man1/diskshelf.1").is_file()
    assert (root / "share/man/man5/diskshelf-catalog.5").is_file()
    unit = root / "lib/systemd/system/diskshelf@.service"
    assert f"ExecStart={prefix}/bin/diskshelf -f " in unit.read_text()
    assert (root / "share/doc/diskshelf/examples/srv-images.mount").is_file()
    assert (root / "share/doc/diskshelf/examples/fstab.example").is_file()
    # The installed binary runs and its --help names the installed pages.
    help_text = subprocess.run([binary, "--help"], capture_output=True, text=True,
                               timeout=scaled(30)).stdout
    assert "diskshelf-catalog(5)" in help_text and "diskshelf(1)" in help_text


@pytest.mark.parametrize("page,words", [
    ("man1/diskshelf.1", ["SYNOPSIS", "OPTIONS", "PREFETCH", "--cache-size", "LOGS"]),
    ("man5/diskshelf-catalog.5", ["KEYS", "owner", "mode", "source"]),
])
def test_man_pages_render(installed, page, words):
    dest, prefix = installed
    path = dest / prefix.relative_to("/") / "share/man" / page
    env = dict(os.environ, MANWIDTH="80", MAN_KEEP_FORMATTING="0", LANG="C.UTF-8")
    r = subprocess.run(["man", "--warnings", "-l", str(path)], capture_output=True, text=True,
                       env=env, timeout=scaled(60))
    assert r.returncode == 0, r.stderr
    assert r.stderr == "", r.stderr
    text = re.sub(".\x08", "", r.stdout)   # drop overstrike bold/underline
    assert text.splitlines()[0].split()[0] == path.name.rsplit(".", 1)[0].upper() + \
        f"({path.suffix[1:]})"
    assert "NAME" in text
    for w in words:
        assert w in text, w
    # No raw Markdown survives the conversion.
    assert "```" not in text and "`" not in text


def verify(unit_path, installed):
    """systemd-analyze verify, finding our man pages (Documentation=) in
    the DESTDIR."""
    dest, prefix = installed
    env = dict(os.environ, MANPATH=str(dest / prefix.relative_to("/") / "share/man"))
    return subprocess.run(["systemd-analyze", "verify", str(unit_path)], capture_output=True,
                          text=True, env=env, timeout=scaled(120))


def test_service_unit_verifies(installed, tmp_path):
    dest, prefix = installed
    unit = dest / prefix.relative_to("/") / "lib/systemd/system/diskshelf@.service"
    # ExecStart names the installed path; point it at the DESTDIR copy so
    # verify can check that the binary exists and is executable.
    text = unit.read_text().replace(f"{prefix}/bin/diskshelf", str(
        dest / prefix.relative_to("/") / "bin/diskshelf"))
    assert "Type=notify" in text
    # Each hardening directive carries a comment on the line(s) above it.
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.split("=")[0] in ("CapabilityBoundingSet", "NoNewPrivileges", "DevicePolicy",
                                  "RestrictAddressFamilies", "RestrictNamespaces",
                                  "SystemCallFilter", "UMask"):
            assert lines[i - 1].startswith("#") or lines[i - 2].startswith("#"), line
    copy = tmp_path / "diskshelf@images.service"
    copy.write_text(text)
    r = verify(copy, installed)
    assert r.returncode == 0 and r.stdout + r.stderr == "", r.stdout + r.stderr


def test_mount_unit_verifies(installed, tmp_path):
    src = pathlib.Path(__file__).resolve().parent.parent / "contrib/systemd/srv-images.mount"
    copy = tmp_path / "srv-images.mount"
    shutil.copy(src, copy)
    assert "Type=fuse.diskshelf" in copy.read_text()
    r = verify(copy, installed)
    assert r.returncode == 0 and r.stdout + r.stderr == "", r.stdout + r.stderr
