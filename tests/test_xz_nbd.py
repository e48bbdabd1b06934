"""xz images over NBD: nbdkit serves the .xz file itself and the daemon
decodes it (the NBD export's content is xz)."""


import pytest

from peers import check_random_reads, sha256, start_process, stop_process, wait_for, write_entry
from xz_helpers import make_image, xz

MIB = 1 << 20


@pytest.fixture
def nbdkit_file(tmp_path):
    """Start `nbdkit -U SOCK file FILE` for a file; stopped by PID."""
    procs = []

    def start(path):
        sock = tmp_path / f"nbd{len(procs)}.sock"
        p = start_process(["nbdkit", "-f", "-U", sock, "file", path],
                          log_path=tmp_path / f"nbdkit{len(procs)}.log")
        procs.append(p)
        wait_for(lambda: sock.exists() or p.poll() is not None, 15, "nbdkit socket")
        assert p.poll() is None, (tmp_path / f"nbdkit{len(procs) - 1}.log").read_text()
        return sock

    yield start
    for p in procs:
        stop_process(p)


def test_multi_block_over_nbd(mount, catalog, nbdkit_file, tmp_path):
    original = make_image(tmp_path / "orig.img", 16 * MIB, seed=12)
    packed = xz(original, tmp_path / "n.img.xz", "-T2", "--block-size=1MiB", "--check=crc32")
    sock = nbdkit_file(packed)
    write_entry(catalog, "n.img", f"source = nbd+unix:///?socket={sock}\n")
    m = mount(catalog)
    assert "xz < nbd" in m.status()
    assert sha256(m.path / "n.img") == sha256(original)
    data = original.read_bytes()
    check_random_reads(m.path / "n.img", data, seed=4)
    # Disconnect before nbdkit is stopped (it waits for its clients).
    assert m.unmount() == 0


def test_single_block_over_nbd(mount, catalog, nbdkit_file, tmp_path):
    original = make_image(tmp_path / "orig.img", 12 * MIB, seed=13)
    packed = xz(original, tmp_path / "one.img.xz")
    sock = nbdkit_file(packed)
    write_entry(catalog, "one.img", f"source = nbd+unix:///?socket={sock}\n")
    m = mount(catalog, "--max-block-size=2M")
    assert sha256(m.path / "one.img") == sha256(original)
    assert "xz-mode: single-block" in m.status()
    assert m.unmount() == 0
