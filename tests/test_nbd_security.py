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


def test_tiny_out_of_order_chunks_fail_fast(mount, catalog, hostile):
    """A read answered with 1-byte data chunks in reverse order is
    refused after a bounded number of chunks (it used to cost CPU time
    quadratic in the number of chunks), and the entry stays usable."""
    tiny = hostile("tiny-chunks")
    write_entry(catalog, "tiny.img",
                f"source = nbd+unix:///?socket={tiny}\ntimeout = 60\nretry-time = 60\n")
    m = mount(catalog)
    result = {}

    def read():
        try:
            direct_pread(m.path / "tiny.img", 0, 256 * 1024)
            result["err"] = "no error"
        except OSError as e:
            result["err"] = e.errno

    t = threading.Thread(target=read)
    t.start()
    t.join(timeout=scaled(30))
    assert not t.is_alive(), "a read of 1-byte chunks did not finish"
    assert result["err"] == errno.EIO
    assert "too many chunks" in m.log()
    # A read split into 16 chunks in reverse order is still fine (after
    # a reconnect: the hostile server, busy making the chunks of the
    # refused read, may be slow to answer, hence the retry time).  Only
    # reads at offset 0 get 1-byte chunks, so a read-ahead in flight on
    # the same connection cannot fail it along with the refused one.
    assert direct_pread(m.path / "tiny.img", 8192, 4096) == pattern(8192, 4096)
    assert m.unmount() == 0


@pytest.mark.parametrize("scenario, message", [
    ("huge-option-reply", r"option reply of 2147483647 bytes is larger than"),
    ("long-info-name", r"the export name the server sent is 5000 bytes, longer than "
                       r"the 4096-byte limit"),
    ("endless-info", r"more than 64 replies to GO; refusing the server"),
    ("trickle", r"reading option reply: Connection timed out"),
    ("long-option-error", r"opening the export refused \(error 6\) \(no such export\): "
                          r"\(a 60000-byte message, longer than 4096\)"),
])
def test_server_lengths_in_the_handshake_are_bounded(mount, catalog, hostile, scenario,
                                                     message):
    """Lengths the server picks during negotiation are checked against a
    limit before anything is allocated; the entry is refused with a
    message that says what was wrong."""
    sock = hostile(scenario)
    write_entry(catalog, "bad.img", f"source = nbd+unix:///?socket={sock}\ntimeout = 3\n")
    m = mount(catalog)
    m.wait_log(r"bad\.img.*" + message, scaled(20))
    assert not (m.path / "bad.img").exists()
    assert m.unmount() == 0


@pytest.mark.parametrize("scenario, message", [
    ("long-error-chunk", "error message of 5000 bytes is longer than 4096"),
    ("huge-chunk", "chunk of 4294967280 bytes is longer than any allowed reply"),
])
def test_server_lengths_in_replies_are_bounded(mount, catalog, hostile, scenario, message):
    """Chunk and error-string lengths in replies are bounded: the read
    fails with EIO and the log says why."""
    sock = hostile(scenario)
    write_entry(catalog, "bad.img",
                f"source = nbd+unix:///?socket={sock}\ncompression = none\n"
                "timeout = 5\nretry-time = 2\n")
    m = mount(catalog)
    t0 = time.monotonic()
    with pytest.raises(OSError) as e:
        direct_pread(m.path / "bad.img", 0, 65536)
    assert e.value.errno == errno.EIO
    assert time.monotonic() - t0 < scaled(30)
    m.wait_log(message, scaled(10))
    assert m.unmount() == 0


def test_tls_over_unix_socket_needs_an_explicit_ca(mount, catalog, tmp_path, test_ca):
    """Over a Unix socket there is no host name to check, so the system
    CAs would accept any public certificate: without ca-cert.pem (or
    ca-file, or tls-hostname) the entry is refused before connecting, with
    a message that says what to add."""
    image = tmp_path / "export.img"
    image.write_bytes(pattern(0, MiB))
    srv = NbdServer("nbdkit", image, tmp_path / "srv", tls="x509", transport="unix",
                    ca=test_ca).start()
    empty = tmp_path / "no-ca"
    empty.mkdir()
    try:
        write_entry(catalog, "noca.img", f"source = nbds+unix:///?socket={srv.sock}\n")
        write_entry(catalog, "emptydir.img",
                    f"source = nbds+unix:///?socket={srv.sock}&tls-certificates={empty}\n")
        write_entry(catalog, "cafile.img",
                    f"source = nbds+unix:///?socket={srv.sock}\nca-file = {test_ca.ca_cert}\n")
        m = mount(catalog)
        assert direct_pread(m.path / "cafile.img", 0, 65536) == pattern(0, 65536)
        for name in ("noca.img", "emptydir.img"):
            m.wait_log(name + r".*no CA certificate to verify the server over a Unix socket",
                       scaled(20))
            assert not (m.path / name).exists()
        assert m.unmount() == 0
    finally:
        srv.stop()
