"""The suite runs in a network namespace whose only interface is lo
(tests/conftest.py), so no peer a test starts can send traffic off the
machine."""

import os
import socket
import subprocess

import pytest


@pytest.mark.skipif(os.geteuid() != 0 or os.environ.get("DISKSHELF_TEST_HOST_NET"),
                    reason="the namespace needs root")
def test_only_loopback_is_reachable():
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True,
                           text=True, check=True).stdout
    names = [line.split(": ")[1].split("@")[0] for line in links.splitlines()]
    assert names == ["lo"], links
    # An address off the machine is unreachable at once, not after a timeout.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        with pytest.raises(OSError) as raised:
            s.connect(("192.0.2.1", 9))
    assert raised.value.errno == 101, raised.value   # ENETUNREACH
    # Loopback works.
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        with socket.create_connection(srv.getsockname(), timeout=5):
            pass
