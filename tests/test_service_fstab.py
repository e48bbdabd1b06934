"""fstab and `mount -t`: the real util-linux mount runs mount.fuse3, which
runs `diskshelf CATALOG MOUNTPOINT -o OPTIONS`; umount ends the daemon.

mount(8) hands its helpers no PATH, so mount.fuse3's shell looks for
diskshelf only in the default directories.  Each test therefore runs in a
private mount namespace (unshare -m) where a directory holding a diskshelf
link is bind-mounted over /usr/local/sbin: the machine's fstab and
directories stay untouched, and the temporary fstab is given with mount -T.
"""

import os
import re
import signal
import subprocess

from peers import make_random_file, scaled, sha256, write_entry

SCRIPT = r"""
set -eu
mount --bind "$BIN_DIR" /usr/local/sbin
$MOUNT_COMMAND
grep " $MNT " /proc/self/mountinfo | sed 's/^/MOUNTINFO: /'
echo "SHA: $(sha256sum "$MNT/a.img" | cut -d' ' -f1)"
if ( : > "$MNT/a.img" ) 2>/dev/null; then echo WRITE: ok; else echo WRITE: refused; fi
pid=$(sed -n 's/^pid: //p' "$MNT/.diskshelf-status")
echo "PID: $pid"
umount "$MNT"
for i in $(seq 1 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$pid" 2>/dev/null; then echo "EXIT: still running"; else echo "EXIT: gone"; fi
"""


def run_in_namespace(diskshelf, tmp_path, mount_command, mnt):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "diskshelf").symlink_to(os.path.realpath(diskshelf))
    env = dict(os.environ, BIN_DIR=str(bin_dir), MNT=str(mnt), MOUNT_COMMAND=mount_command)
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", "bash", "-c", SCRIPT],
                          capture_output=True, text=True, env=env, timeout=scaled(120))
    pid = re.search(r"^PID: (\d+)$", proc.stdout, re.M)
    if pid and proc.returncode != 0:
        try:   # a failed script must not leave the daemon behind
            os.kill(int(pid.group(1)), signal.SIGTERM)
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def catalog_with_image(catalog, tmp_path):
    image = make_random_file(tmp_path / "disk.raw", 2 << 20)
    write_entry(catalog, "a.img", f"source = {image}\n")
    return image


def check(out, image, log):
    info = re.search(r"^MOUNTINFO: (.*)$", out, re.M).group(1)
    assert " - fuse.diskshelf " in info, info
    assert "allow_other" in info, info
    assert f"SHA: {sha256(image)}" in out
    assert "WRITE: refused" in out          # ro reached the daemon
    assert "EXIT: gone" in out              # umount ended the daemon
    text = log.read_text()
    assert re.search(r"info: mounted \S+ on \S+: 1 entries", text), text
    assert "info: unmounted" in text, text
    assert "Sanitizer" not in text, text


def test_fstab_line_with_mount_T(diskshelf, catalog, tmp_path):
    image = catalog_with_image(catalog, tmp_path)
    mnt = tmp_path / "images"
    mnt.mkdir()
    log = tmp_path / "daemon.log"
    fstab = tmp_path / "fstab"
    fstab.write_text(f"# a temporary fstab\n{catalog} {mnt} fuse.diskshelf "
                     f"ro,allow_other,_netdev,cache-dir={tmp_path / 'cache'},"
                     f"log-file={log} 0 0\n")
    out = run_in_namespace(diskshelf, tmp_path, f"mount -T {fstab} {mnt}", mnt)
    check(out, image, log)


def test_mount_t_fuse_diskshelf(diskshelf, catalog, tmp_path):
    image = catalog_with_image(catalog, tmp_path)
    mnt = tmp_path / "images"
    mnt.mkdir()
    log = tmp_path / "daemon.log"
    out = run_in_namespace(diskshelf, tmp_path,
                           f"mount -t fuse.diskshelf {catalog} {mnt} -o ro,allow_other,"
                           f"cache-dir={tmp_path / 'cache'},log-file={log}", mnt)
    check(out, image, log)
