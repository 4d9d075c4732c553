"""GET /v1/host: the running A/B slot from the kernel command line, and whether KVM guests can run.

The node reads /proc/cmdline, /proc/cpuinfo and /dev/kvm through paths in its settings; these tests
point them at files of their own (and at real device nodes) to see each answer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from qx_common.errors import EnvironmentError_
from qx_node import telemetry
from qx_node.api import create_app
from qx_node.node import Node
from tests.node.conftest import Api, make_settings

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Test CPU @ 2.00GHz
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic {extra}sep mtrr
vmx flags\t: vnmi preemption_timer
"""
CHAR_DEVICE = Path("/dev/null")  # a real character device that opens read-write: a working /dev/kvm


def _host(tmp_path: Path, *, cmdline: str, flags: str, kvm: Path, **kw: Any) -> dict[str, Any]:
    (tmp_path / "cmdline").write_text(cmdline)
    (tmp_path / "cpuinfo").write_text(CPUINFO.format(extra=flags))
    s = make_settings(tmp_path, proc_cmdline=tmp_path / "cmdline", proc_cpuinfo=tmp_path / "cpuinfo",
                      kvm_device=kvm, **kw)
    node = Node(s)
    with Api(create_app(node), raise_server_exceptions=False) as c:
        r = c.get("/v1/host", headers={"Authorization": f"Bearer {node.token}"})
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]


def test_slot_and_kvm_usable(tmp_path: Path) -> None:
    host = _host(tmp_path, cmdline="BOOT_IMAGE=/vmlinuz root=PARTLABEL=root-b ro quiet\n", flags="vmx ",
                 kvm=CHAR_DEVICE)
    assert host["slot"] == "b"
    assert host["kvm"] == {"usable": True, "reason": "/dev/null opens read-write and the CPU has vmx"}
    assert host["virtualization"] == "kvm" and host["cpu_model"] == "Test CPU @ 2.00GHz"


def test_a_verity_boot_reports_the_slot_its_root_hash_names(tmp_path: Path) -> None:
    """roothash= names the data partition by its GPT UUID: the slot is that partition's GPT name (sysfs
    PARTNAME, as the kernel shows it; the by-partuuid link as udev makes it)."""
    roothash = "0123456789abcdef" * 2 + "fedcba9876543210" * 2
    links, sysfs = tmp_path / "dev/disk/by-partuuid", tmp_path / "sys/class/block"
    links.mkdir(parents=True)
    (tmp_path / "dev/sda4").write_bytes(b"")
    (sysfs / "sda4").mkdir(parents=True)
    (sysfs / "sda4/uevent").write_text("MAJOR=8\nMINOR=4\nDEVNAME=sda4\nDEVTYPE=partition\nPARTN=4\nPARTNAME=root-b\n")
    (links / "01234567-89ab-cdef-0123-456789abcdef").symlink_to("../../sda4")
    host = _host(tmp_path, cmdline=f"root=/dev/mapper/root ro roothash={roothash}\n", flags="vmx ", kvm=CHAR_DEVICE,
                 by_partuuid=links, sys_class_block=sysfs)
    assert host["slot"] == "b"


def test_no_vmx_flag_means_no_kvm_even_with_the_device(tmp_path: Path) -> None:
    # The "vmx flags" line must not count as the flag: only the words of the flags line do.
    host = _host(tmp_path, cmdline="root=PARTLABEL=root-a", flags="", kvm=CHAR_DEVICE)
    assert host["slot"] == "a"
    assert host["kvm"]["usable"] is False and "neither vmx nor svm" in host["kvm"]["reason"]
    assert host["virtualization"] == "tcg"


def test_missing_or_unopenable_kvm_device(tmp_path: Path) -> None:
    host = _host(tmp_path, cmdline="root=/dev/sda2", flags="svm ", kvm=tmp_path / "no-kvm")
    assert host["slot"] is None  # not booted from a Quantix slot
    assert host["kvm"]["usable"] is False and "no-kvm does not exist" in host["kvm"]["reason"]
    # A directory exists but cannot be opened read-write (root bypasses file modes, not EISDIR).
    host = _host(tmp_path, cmdline="", flags="svm ", kvm=tmp_path)
    assert host["kvm"]["usable"] is False and "cannot open read-write" in host["kvm"]["reason"]


def test_unreadable_cmdline_is_no_slot(tmp_path: Path) -> None:
    assert telemetry.running_slot(tmp_path / "absent") is None


@pytest.mark.parametrize("cmdline", [
    "root=PARTLABEL=root-a", "quiet root=PARTLABEL=root-b ro", "root=PARTLABEL=root-c",
    "root=PARTLABEL=root-ab", "xroot=PARTLABEL=root-a", "root=PARTLABEL=root-a\n", "root=/dev/vda2", "",
    "root=PARTLABEL=root-b\troot=PARTLABEL=root-a",
])
def test_slot_rule_is_qx_updates_rule(tmp_path: Path, cmdline: str) -> None:
    """qx-node copies qx-update's rule (it does not depend on qx-update): both must agree."""
    from qx_update.slots import running_slot

    path = tmp_path / "cmdline"
    path.write_text(cmdline)
    try:
        theirs: str | None = running_slot("", path)
    except EnvironmentError_:
        theirs = None
    assert telemetry.running_slot(path) == theirs


def test_kvm_rule_is_the_image_builders_rule_on_this_machine() -> None:
    """On the real /dev/kvm and /proc/cpuinfo the node decides as qx-build's QEMU launcher does."""
    from qx_build.qemu import kvm_usable

    status = telemetry.kvm_status(Path("/dev/kvm"), Path("/proc/cpuinfo").read_text())
    assert status["usable"] is kvm_usable(), status["reason"]
