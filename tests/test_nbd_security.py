"""NBD security: what a hostile server (tests/nbd_hostile.py) or a man in
the middle can and cannot make the client do.  Injected plaintext around
STARTTLS, reply chunking that would cost quadratic time, server-chosen
lengths that would become allocations, and TLS over a Unix socket with
nothing to verify the server against."""

import errno
import threading
import time

import pytest

from nbd_helpers import NbdServer, direct_pread, hostile  # noqa: F401 (fixture)
from peers import scaled, write_entry

MiB = 1 << 20
SIZE = 1 << 20          # the hostile server's export
FORGED_SIZE = 3 << 20   # what its injected plaintext claims


def pattern(offset, length):
    return bytes((offset + i) % 251 for i in range(length))


def test_starttls_injected_plaintext_is_refused(mount, catalog, hostile, test_ca):
    """Bytes that follow the STARTTLS ACK in the clear must never be taken
    as if they came through TLS: the connection is refused, with a
    reason.  A well-behaved TLS server in the same mount works."""
    inject = hostile("starttls-inject", test_ca.dir)
    good = hostile("tls-good", test_ca.dir)
    write_entry(catalog, "inject.img",
                f"source = nbds+unix:///?socket={inject}&tls-certificates={test_ca.dir}\n"
                "timeout = 5\n")
    write_entry(catalog, "good.img",
                f"source = nbds+unix:///?socket={good}&tls-certificates={test_ca.dir}\n")
    m = mount(catalog)
    assert direct_pread(m.path / "good.img", 4096, 65536) == pattern(4096, 65536)
    m.wait_log(r"inject\.img.*in the clear after its STARTTLS reply", scaled(20))
    assert not (m.path / "inject.img").exists()
    assert m.unmount() == 0
