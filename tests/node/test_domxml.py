"""Domain XML is built with ElementTree: values cannot inject elements; metadata round-trips."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from qx_node.domxml import Paths, build_domain_xml, read_domain_xml
from qx_node.vmspec import parse_vm_spec


def test_xml_has_the_spec_and_reads_back() -> None:
    spec = parse_vm_spec({"name": "web", "vcpus": 2, "memory_mib": 256, "firmware": "uefi",
                          "disks": [{"size_gib": 1}, {"volume": "b.raw", "bus": "sata"}], "cdrom": "x.iso",
                          "nics": [{"bridge": "br0"}], "restart_on_crash": True})
    xml = build_domain_xml(spec, Paths(("/p/web-disk0.qcow2", "/p/b.raw"), cdrom="/p/x.iso"), "qemu")
    root = ET.fromstring(xml)
    assert root.get("type") == "qemu" and root.findtext("name") == "web"
    assert root.find("os").get("firmware") == "efi"
    assert [b.get("dev") for b in root.findall("os/boot")] == ["cdrom", "hd"]
    assert root.findtext("on_crash") == "restart"
    assert root.find("features/acpi") is not None
    targets = [(d.find("target").get("dev"), d.find("driver").get("type")) for d in root.findall("devices/disk")]
    assert targets == [("vda", "qcow2"), ("sda", "raw"), ("sdb", "raw")]
    info = read_domain_xml(xml)
    assert info.restart_on_crash and info.firmware == "uefi"
    assert info.disks == ("/p/web-disk0.qcow2", "/p/b.raw") and info.cdroms == ("/p/x.iso",)


def test_values_cannot_inject_xml() -> None:
    evil = "console=ttyS0 </cmdline><devices><hostdev/></devices><cmdline>"
    spec = parse_vm_spec({"name": "k", "memory_mib": 64, "kernel": "vmlinuz", "initrd": "initrd.img",
                          "cmdline": evil})
    xml = build_domain_xml(spec, Paths((), kernel="/p/vmlinuz", initrd="/p/initrd.img"), "kvm")
    root = ET.fromstring(xml)
    assert root.findtext("os/cmdline") == evil
    assert root.find(".//hostdev") is None
    assert root.findall("os/boot") == []  # direct kernel boot
