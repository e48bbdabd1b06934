"""Captive servers never hold the caller's stdio: a background start
returns through a pipe, and the servers' output goes to the daemon's log,
one line per line, prefixed with the entry's name (issue 15, item 4)."""

import os
import subprocess

from conftest import assert_clean_output, is_mounted
from peers import make_random_file, scaled, wait_for, write_entry


def chatty_server(tmp_path, image):
    """A captive command that talks on stdout and stderr, then serves
    image with nbdkit (socket activation keeps working through exec)."""
    script = tmp_path / "chatty-server"
    script.write_text("#!/bin/sh\n"
                      "echo 'hello on stdout'\n"
                      "echo 'hello on stderr' >&2\n"
                      "printf 'two\\nlines\\n' >&2\n"
                      f"exec nbdkit --exit-with-parent -f file {image}\n")
    script.chmod(0o755)
    return script


def test_background_start_through_a_pipe_returns(diskshelf, catalog, tmp_path, background):
    image = make_random_file(tmp_path / "disk.img", 1 << 20)
    write_entry(catalog, "vm.img", f"command = {chatty_server(tmp_path, image)}\n")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    pid = None
    try:
        # `| cat` ends only when every holder of the pipe closed it.
        log = tmp_path / "daemon.log"
        r = subprocess.run(f"'{diskshelf}' --cache-dir=none --log-file='{log}' '{catalog}' '{mnt}'"
                           " 2>&1 | cat",
                           shell=True, capture_output=True, text=True, timeout=scaled(60),
                           env=background.env)
        assert r.returncode == 0
        assert_clean_output(r.stdout)
        # The server's words never reach the caller raw; they are the
        # daemon's log lines, prefixed with the entry's name.
        for word in ("hello on stdout", "hello on stderr", "two", "lines"):
            assert word not in r.stdout, r.stdout
        wait_for(lambda: "vm.img: hello on stderr" in log.read_text(), scaled(30),
                 "the server's output in the daemon's log")
        assert "vm.img: hello on stdout" in log.read_text()
        assert is_mounted(mnt)
        assert (mnt / "vm.img").read_bytes() == image.read_bytes()
        for line in (mnt / ".diskshelf-status").read_text().splitlines():
            if line.startswith("pid: "):
                pid = int(line[5:])
    finally:
        subprocess.run(["fusermount3", "-u", mnt], timeout=scaled(30))
    if pid:
        wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 30, "the daemon to exit")


def test_server_output_goes_to_the_log_by_line(mount, catalog, tmp_path):
    image = make_random_file(tmp_path / "disk.img", 1 << 20)
    write_entry(catalog, "sub/vm.img", f"command = {chatty_server(tmp_path, image)}\n")
    m = mount(catalog)
    assert (m.path / "sub" / "vm.img").read_bytes() == image.read_bytes()
    for line in ("hello on stdout", "hello on stderr", "two", "lines"):
        m.wait_log(rf"diskshelf: info: sub/vm\.img: {line}\n", timeout=30)
