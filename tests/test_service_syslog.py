"""In the background the daemon logs to syslog when /dev/log is there.

This machine has no syslog, and creating /dev/log would change where
every other daemon logs, so the test runs in a private mount namespace:
a tmpfs over /dev holding only null, zero, urandom, fuse and a /dev/log
socket that a small listener here reads."""

import os
import subprocess
import sys
import textwrap

from peers import make_random_file, scaled, write_entry

INSIDE = textwrap.dedent(r"""
    import os, socket, subprocess, sys, time
    diskshelf, catalog, mnt, keep = sys.argv[1:5]
    os.makedirs(keep, exist_ok=True)
    subprocess.run(["mount", "--bind", "/dev", keep], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=755", "devtmp", "/dev"], check=True)
    for name in ("null", "zero", "urandom", "fuse"):
        open("/dev/" + name, "w").close()
        subprocess.run(["mount", "--bind", keep + "/" + name, "/dev/" + name], check=True)
    log = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    log.bind("/dev/log")
    log.settimeout(float(sys.argv[5]))
    r = subprocess.run([diskshelf, "--cache-dir=none", catalog, mnt],
                       capture_output=True, text=True, timeout=float(sys.argv[5]))
    print("START", r.returncode, repr(r.stderr), flush=True)
    with open(mnt + "/a.img", "rb") as f:
        print("READ", len(f.read()), flush=True)
    subprocess.run(["fusermount3", "-u", mnt], check=True)
    deadline = time.monotonic() + float(sys.argv[5])
    while time.monotonic() < deadline:
        try:
            line = log.recv(65536).decode(errors="replace")
        except socket.timeout:
            break
        print("SYSLOG", line, flush=True)
        if "unmounted" in line:
            break
""")


def test_background_logs_go_to_syslog(diskshelf, catalog, tmp_path):
    image = make_random_file(tmp_path / "disk.raw", 1 << 20)
    write_entry(catalog, "a.img", f"source = {image}\n")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = dict(os.environ)
    env.pop("JOURNAL_STREAM", None)
    r = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, "-c",
                        INSIDE, os.path.realpath(diskshelf), str(catalog), str(mnt),
                        str(tmp_path / "realdev"), str(scaled(30))],
                       capture_output=True, text=True, env=env, timeout=scaled(120))
    out = r.stdout
    assert r.returncode == 0, out + r.stderr
    assert "START 0 " in out
    assert "no syslog socket" not in out   # syslog is there: no file fallback
    assert f"READ {1 << 20}" in out
    lines = [ln for ln in out.splitlines() if ln.startswith("SYSLOG")]
    # <30> is LOG_DAEMON | LOG_INFO; the tag carries the daemon's pid.
    assert any(ln.startswith("SYSLOG <30>") and "diskshelf[" in ln and "unmounted" in ln
               for ln in lines), out
