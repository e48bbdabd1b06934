"""Broken entries are easy to see (issue 15, item 6): the log never cuts
the list short, and status lists every broken entry with its file, line
and reason."""

from peers import make_random_file, wait_for, write_entry

LONG = "a-rather-long-entry-name-so-that-the-list-of-broken-entries-grows-" * 2


def test_every_broken_entry_in_status_and_log(mount, catalog, tmp_path):
    good = make_random_file(tmp_path / "good.img", 1 << 20)
    write_entry(catalog, "good.img", f"source = {good}\n")
    expect = {}
    for i in range(40):
        name = f"{LONG}{i:02d}"
        if i % 2:
            # Parses, but fails to open: the row names the source line.
            write_entry(catalog, name, f"# comment\nsource = {good}\ncompression = xz\n")
            expect[name] = (2, "not an xz file")
        else:
            write_entry(catalog, name, f"source = {good}\nbogus-key-{i} = 1\n")
            expect[name] = (2, f"unknown key 'bogus-key-{i}'")
    m = mount(catalog)
    status = m.status()
    assert "entries: 1\nbroken: 40\n" in status
    rows = [line for line in status.splitlines() if line.startswith("broken-entry: ")]
    assert len(rows) == 40, rows
    for name, (line, reason) in expect.items():
        mine = [r for r in rows if f"/{name}.conf:{line}: " in r]
        assert len(mine) == 1 and reason in mine[0], (name, rows)
    log = m.log()
    assert len(log) > 4096
    for name, (line, reason) in expect.items():
        assert f"{name}.conf:{line}: {reason}" in log or \
            (f"{name}: left out of the mount" in log and reason in log), name

    # A reload keeps the list whole too.
    write_entry(catalog, "late", f"source = {good}\nsource = {good}\n")
    wait_for(lambda: "broken: 41\n" in m.status(), 30, "the reload")
    status = m.status()
    assert sum(line.startswith("broken-entry: ") for line in status.splitlines()) == 41
    assert "/late.conf:2: duplicate key 'source'" in status
