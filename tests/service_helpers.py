"""Helpers for the service tests: a notify-socket listener standing in
for systemd, a world-traversable scratch directory (pytest's tmp_path is
0700, so other users could not reach a mount inside it), and running a
command as another user."""

import os
import pathlib
import shutil
import socket
import subprocess
import tempfile

from peers import scaled


class NotifyListener:
    """A Unix datagram socket that collects sd_notify messages, the way
    systemd's does.  `path` may start with '@' for the abstract namespace."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        addr = "\0" + self.path[1:] if self.path.startswith("@") else self.path
        self.sock.bind(addr)
        self.messages = []

    def receive(self, timeout=30):
        """The next message as a dict of KEY -> VALUE (raises on timeout)."""
        self.sock.settimeout(scaled(timeout))
        data = self.sock.recv(65536).decode()
        fields = dict(line.split("=", 1) for line in data.splitlines() if "=" in line)
        self.messages.append(fields)
        return fields

    def wait_for(self, key, timeout=30):
        """Receive until a message has `key`; returns that message."""
        while True:
            m = self.receive(timeout)
            if key in m:
                return m

    def close(self):
        self.sock.close()
        if not self.path.startswith("@"):
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


class OpenScratch:
    """A directory under /tmp that every user may traverse (0755),
    removed on close.  Mounts inside it are the test's to unmount."""

    def __init__(self):
        self.path = pathlib.Path(tempfile.mkdtemp(prefix="diskshelf-svc-"))
        os.chmod(self.path, 0o755)

    def close(self):
        shutil.rmtree(self.path, ignore_errors=True)


NOBODY = 65534


def as_user(uid, argv, **kw):
    """Run argv as uid (group = uid, no extra groups); CompletedProcess."""
    return subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                           "--", *map(str, argv)], capture_output=True,
                          timeout=scaled(kw.pop("timeout", 60)), **kw)
