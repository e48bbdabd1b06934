"""An OVA as virt-v2v expects one (ustar; the .ovf first, then the
stream-optimized .vmdk, then the .mf manifest): each member mounted, the
manifest's checksums hold for the mounted files, and qemu reads the
mounted disk as the original."""

import hashlib
import json
import re

import pytest

from peers import run, sha256, write_entry
from tar_helpers import tar_create, tar_member_names, tar_member_sha256, write_sparse

MIB = 1024 * 1024

OVF = """<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"
          xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
          xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">
  <References>
    <File ovf:href="{disk}" ovf:id="file1" ovf:size="{size}"/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:capacity="{capacity}" ovf:capacityAllocationUnits="byte" ovf:diskId="vmdisk1"
          ovf:fileRef="file1"
          ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <VirtualSystem ovf:id="testvm">
    <Info>A virtual machine</Info>
    <Name>testvm</Name>
  </VirtualSystem>
</Envelope>
"""


@pytest.fixture
def ova(tmp_path):
    """testvm.ova: testvm.ovf, testvm-disk1.vmdk, testvm.mf."""
    d = tmp_path / "ova"
    raw = write_sparse(tmp_path / "disk.raw", 64 * MIB,
                       [0, 3 * MIB, 20 * MIB + 4096, 64 * MIB - 65536], seed=42)
    vmdk = d / "testvm-disk1.vmdk"
    d.mkdir()
    run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized",
         raw, vmdk])
    (d / "testvm.ovf").write_text(OVF.format(disk=vmdk.name, size=vmdk.stat().st_size,
                                             capacity=64 * MIB))
    lines = [f"SHA256({n})= {sha256(d / n)}\n" for n in ("testvm.ovf", vmdk.name)]
    (d / "testvm.mf").write_text("".join(lines))
    archive = tar_create(tmp_path / "testvm.ova", d,
                         ["testvm.ovf", vmdk.name, "testvm.mf"], "ustar")
    assert tar_member_names(archive) == ["testvm.ovf", vmdk.name, "testvm.mf"]
    return archive, raw


def test_ova_members(ova, catalog, mount):
    archive, raw = ova
    names = {"ovf": "testvm.ovf", "vmdk": "testvm-disk1.vmdk", "mf": "testvm.mf"}
    for key, member in names.items():
        write_entry(catalog, f"vm/{key}", f"source = {archive}\nentry = {member}\n")
    m = mount(catalog)
    for key, member in names.items():
        assert sha256(m.path / "vm" / key) == tar_member_sha256(archive, member)

    # The manifest, read from the mount, vouches for the other two members.
    manifest = (m.path / "vm" / "mf").read_text()
    checked = 0
    for line in manifest.splitlines():
        mm = re.match(r"SHA256\((.+)\)= ([0-9a-f]{64})$", line)
        assert mm, line
        key = {v: k for k, v in names.items()}[mm.group(1)]
        assert hashlib.sha256((m.path / "vm" / key).read_bytes()).hexdigest() == mm.group(2)
        checked += 1
    assert checked == 2
    assert "testvm-disk1.vmdk" in (m.path / "vm" / "ovf").read_text()

    # qemu opens the mounted member as a stream-optimized VMDK whose
    # content is the original disk.
    info = json.loads(run(["qemu-img", "info", "--output=json", "-f", "vmdk",
                           m.path / "vm" / "vmdk"]).stdout)
    assert info["format"] == "vmdk"
    assert info["virtual-size"] == 64 * MIB
    run(["qemu-img", "compare", "-f", "vmdk", "-F", "raw", m.path / "vm" / "vmdk", raw])
