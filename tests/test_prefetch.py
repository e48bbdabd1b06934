"""`diskshelf prefetch [--background] FILE...`: after a prefetch the HTTP
server is stopped and the whole image still reads right (plain HTTP and a
single-block xz, which is decoded into the disk cache); failures say why;
--background only starts; Ctrl-C stops only the prefetch, and a second
prefetch of the same file joins the first."""

import fcntl
import os
import signal
import struct
import subprocess

from http_helpers import http_server, place_image  # noqa: F401
from peers import Nginx, make_random_file, scaled, sha256, stop_process, wait_for, write_entry
from xz_helpers import blocks, make_image, xz

MiB = 1 << 20


def prefetch(diskshelf, *args, timeout=300):
    return subprocess.run([str(diskshelf), "prefetch", *map(str, args)], capture_output=True,
                          text=True, timeout=scaled(timeout), stdin=subprocess.DEVNULL)


# struct prefetch_progress (fs/prefetch.h) and PREFETCH_IOC_PROGRESS,
# _IOR ('D', 0x72, struct prefetch_progress).
PROGRESS = struct.Struct("=IIQQ488s")
IOC_PROGRESS = (2 << 30) | (PROGRESS.size << 16) | (ord("D") << 8) | 0x72
STATES = ["idle", "running", "done", "failed", "stopped"]


def progress(path):
    """The daemon's answer to PREFETCH_IOC_PROGRESS on path, as
    [state, done, total, waiters] strings."""
    fd = os.open(path, os.O_RDONLY)
    try:
        buf = bytearray(PROGRESS.size)
        fcntl.ioctl(fd, IOC_PROGRESS, buf)
    finally:
        os.close(fd)
    state, waiters, done, total, _ = PROGRESS.unpack(buf)
    return [STATES[state], str(done), str(total), str(waiters)]


def drop_page_cache(path):
    """Forget the kernel's cached pages of a file, so reads reach the daemon."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def test_prefetch_then_server_gone(diskshelf, mount, catalog, http_server):
    image = place_image(http_server, "disk.img", 24 * MiB)
    src = make_image(http_server.root / "single.raw", 12 * MiB)
    packed = xz(src, http_server.root / "single.raw.xz", "-T1")
    assert len(blocks(packed)) == 1
    write_entry(catalog, "disk.img", f"source = {http_server.url('disk.img')}\n")
    write_entry(catalog, "single.img", f"source = {http_server.url('single.raw.xz')}\n")
    # A block over --max-block-size takes the single-block path: one
    # sequential decode into the disk cache.
    m = mount(catalog, "--max-block-size=4M")
    r = prefetch(diskshelf, m.path / "disk.img", m.path / "single.img")
    assert r.returncode == 0, r.stderr
    assert f"{m.path / 'disk.img'}: local (24.0 MiB)" in r.stdout
    assert f"{m.path / 'single.img'}: local (12.0 MiB)" in r.stdout
    assert progress(m.path / "disk.img")[:3] == ["done", str(24 * MiB), str(24 * MiB)]
    # The decoder thread marks the image complete just after the last read.
    wait_for(lambda: "xz-decode: complete in disk cache" in m.status(), 30,
             "the xz decode to be complete")

    http_server.stop()
    for name, want in (("disk.img", image), ("single.img", src)):
        drop_page_cache(m.path / name)
        assert sha256(m.path / name) == sha256(want), name


def test_prefetch_failures_say_why(diskshelf, mount, catalog, tmp_path, http_server):
    place_image(http_server, "disk.img", 2 * MiB)
    write_entry(catalog, "disk.img", f"source = {http_server.url('disk.img')}\n")
    m = mount(catalog, "--cache-dir=none")
    r = prefetch(diskshelf, m.path / "disk.img")
    assert r.returncode == 1
    assert "prefetch failed: the disk cache is off" in r.stderr
    plain = make_random_file(tmp_path / "plain.raw", 4096)
    r = prefetch(diskshelf, plain)
    assert r.returncode == 1 and "is not an image in a diskshelf mount" in r.stderr
    r = prefetch(diskshelf)
    assert r.returncode == 2 and "usage" in r.stderr


def test_background_only_starts(diskshelf, mount, catalog, http_server):
    image = place_image(http_server, "disk.img", 16 * MiB)
    write_entry(catalog, "disk.img", f"source = {http_server.url('disk.img')}\n")
    m = mount(catalog)
    r = prefetch(diskshelf, "--background", m.path / "disk.img", timeout=30)
    assert r.returncode == 0, r.stderr
    assert "disk.img: prefetch started" in r.stdout or "prefetch done" in r.stdout
    wait_for(lambda: progress(m.path / "disk.img")[0] == "done", 120, "the background prefetch")
    http_server.stop()
    drop_page_cache(m.path / "disk.img")
    assert sha256(m.path / "disk.img") == sha256(image)


def test_progress_bar_on_a_terminal(diskshelf, mount, catalog, http_server):
    place_image(http_server, "disk.img", 8 * MiB)
    write_entry(catalog, "disk.img", f"source = {http_server.url('disk.img')}\n")
    m = mount(catalog)
    # script(1) gives the command a pseudo-terminal.
    r = subprocess.run(["script", "-qec", f"{diskshelf} prefetch {m.path / 'disk.img'}",
                        "/dev/null"], capture_output=True, text=True, timeout=scaled(120),
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "local (8.0 MiB)" in r.stdout
    assert "[" + "#" * 30 + "] 100.0%" in r.stdout and "/s ETA" in r.stdout


def test_ctrl_c_stops_only_the_prefetch_and_joins(diskshelf, mount, catalog, tmp_path):
    # A slow server, so the prefetch is still running when interrupted.
    server = Nginx(tmp_path / "slow", extra="limit_rate 256k;").start()
    try:
        make_random_file(server.root / "big.img", 128 * MiB)
        write_entry(catalog, "big.img", f"source = {server.url('big.img')}\n")
        m = mount(catalog)
        path = m.path / "big.img"
        first = subprocess.Popen([str(diskshelf), "prefetch", str(path)], text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wait_for(lambda: progress(path)[0] == "running", 60, "the first prefetch")
        second = subprocess.Popen([str(diskshelf), "prefetch", str(path)], text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # The second one joins the running job instead of starting another.
        wait_for(lambda: progress(path)[3] == "2", 60, "the second prefetch to join")
        assert progress(path)[0] == "running"

        first.send_signal(signal.SIGINT)
        out, err = first.communicate(timeout=scaled(30))
        assert first.returncode == 130, err
        assert "another prefetch of it goes on" in err
        state = progress(path)
        assert state[0] == "running" and state[3] == "1"

        second.send_signal(signal.SIGINT)
        out, err = second.communicate(timeout=scaled(30))
        assert second.returncode == 130, err
        wait_for(lambda: progress(path)[0] == "stopped", 60, "the job to stop")
        # The daemon goes on serving.
        with open(path, "rb") as f:
            assert len(f.read(4096)) == 4096
    finally:
        for p in ("first", "second"):
            proc = locals().get(p)
            if proc is not None:
                stop_process(proc)
        server.stop()
