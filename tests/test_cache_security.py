"""The disk cache refuses a directory others could tamper with: one
writable by group or others, or owned by another user.  The daemon then
reads uncached, with a warning that says what to change."""

import os

import pytest

from http_helpers import http_server, place_image  # noqa: F401
from peers import sha256, write_entry

MiB = 1 << 20


@pytest.mark.parametrize("mode,owner", [(0o777, None), (0o770, None), (0o700, 65534)])
def test_shared_cache_dir_not_used(mount, catalog, http_server, tmp_path, mode, owner):
    if owner is not None and os.geteuid() != 0:
        pytest.skip("giving a directory to another user needs root")
    cache = tmp_path / "shared-cache"
    cache.mkdir()
    os.chmod(cache, mode)
    if owner is not None:
        os.chown(cache, owner, owner)
    image = place_image(http_server, "disk.img", 3 * MiB)
    write_entry(catalog, "d.img", f"source = {http_server.url('disk.img')}\n")
    m = mount(catalog, f"--cache-dir={cache}")
    assert sha256(m.path / "d.img") == sha256(image)
    m.wait_log(r"cache: .*shared-cache: (writable by|owned by uid 65534).*not be cached"
               r".*--cache-dir a directory of your own")
    assert "cache: off" in m.status()
    assert sorted(os.listdir(cache)) == []


def test_private_cache_dir_used(mount, catalog, http_server, tmp_path):
    cache = tmp_path / "private-cache"
    cache.mkdir(mode=0o700)
    image = place_image(http_server, "disk.img", 3 * MiB)
    write_entry(catalog, "d.img", f"source = {http_server.url('disk.img')}\n")
    m = mount(catalog, f"--cache-dir={cache}")
    assert sha256(m.path / "d.img") == sha256(image)
    assert "cache-present:" in m.status()
    assert any(name.endswith(".dsc") for name in os.listdir(cache))
