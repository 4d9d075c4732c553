"""The one slot parser, and parity: every package that tells the running slot gives the same answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from qx_common.slot import root_arg, slot_from_cmdline

CASES = [
    ("root=PARTLABEL=root-a ro quiet", "a"),
    ("BOOT_IMAGE=x root=PARTLABEL=root-b", "b"),
    ("root=PARTLABEL=root-a root=PARTLABEL=root-b", "b"),      # the kernel takes the last root=
    ("root=PARTLABEL=root-b root=/dev/vda2", None),            # ... even when it is not a slot
    ("root=PARTLABEL=root-a.old", None),
    ("root=PARTLABEL=root-c", None),
    ("xroot=PARTLABEL=root-a", None),
    ("quantix.live=1 console=ttyS0", None),
    ("", None),
]


@pytest.mark.parametrize("cmdline, slot", CASES)
def test_slot_from_cmdline(cmdline: str, slot: str | None) -> None:
    assert slot_from_cmdline(cmdline) == slot


def test_root_arg_round_trips_and_refuses_other_slots() -> None:
    assert [slot_from_cmdline(root_arg(s)) for s in ("a", "b")] == ["a", "b"]
    with pytest.raises(ValueError):
        root_arg("c")


@pytest.mark.parametrize("cmdline, slot", CASES)
def test_qx_update_agrees(tmp_path: Path, cmdline: str, slot: str | None) -> None:
    from qx_common.errors import EnvironmentError_
    from qx_update.slots import running_slot

    f = tmp_path / "cmdline"
    f.write_text(cmdline)
    if slot is None:
        with pytest.raises(EnvironmentError_):
            running_slot("auto", f)
    else:
        assert running_slot("auto", f) == slot


def test_a_version_with_a_trailing_newline_is_not_a_version() -> None:
    from qx_common.version import is_valid_version, version_key

    assert is_valid_version("1.2.0") and is_valid_version("1.2.0-rc.1")
    for bad in ("1.2.0\n", " 1.2.0", "1.2", "01.2.0", "1.2.0-", ""):
        assert not is_valid_version(bad), repr(bad)
    with pytest.raises(ValueError):
        version_key("1.2.0\n")


@pytest.mark.parametrize("cmdline, slot", CASES)
def test_qx_node_agrees(tmp_path: Path, cmdline: str, slot: str | None) -> None:
    from qx_node.telemetry import running_slot

    f = tmp_path / "cmdline"
    f.write_text(cmdline)
    assert running_slot(f) == slot


@pytest.mark.parametrize("cmdline, slot", CASES)
def test_the_console_agrees(tmp_path: Path, cmdline: str, slot: str | None) -> None:
    from qx_console.host.context import HostContext
    from qx_console.host.machine import Machine

    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cmdline").write_text(cmdline)
    assert Machine(HostContext(root=tmp_path)).slot() == (slot.upper() if slot else "?")


# -- a verity boot: the slot is the partition its root hash names --------------------------------

ROOTHASH = "0123456789abcdef" * 2 + "fedcba9876543210" * 2
DATA_UUID = "01234567-89ab-cdef-0123-456789abcdef"  # the first 128 bits of ROOTHASH
VERITY_CMDLINE = f"root=/dev/mapper/root rootfstype=erofs ro roothash={ROOTHASH} console=ttyS0,115200"


def _kernel_parsed(tmp_path: Path, partname: str, *, uuid: str = DATA_UUID) -> tuple[Path, Path]:
    """A host whose kernel parsed the GPT: sysfs gives the partition's PARTNAME (the files as the kernel
    shows them), udev linked the partition under its UUID. Returns (by-partuuid, sys/class/block)."""
    dev, sysfs, links = tmp_path / "dev", tmp_path / "sys/class/block", tmp_path / "dev/disk/by-partuuid"
    links.mkdir(parents=True)
    (dev / "nvme0n1p3").write_bytes(b"")
    (sysfs / "nvme0n1p3").mkdir(parents=True)
    (sysfs / "nvme0n1p3/uevent").write_text(
        f"MAJOR=259\nMINOR=3\nDEVNAME=nvme0n1p3\nDEVTYPE=partition\nPARTN=3\nPARTNAME={partname}\n")
    (links / uuid).symlink_to("../../nvme0n1p3")
    return links, sysfs


@pytest.mark.parametrize(("partname", "slot"), [("root-a", "a"), ("root-b", "b"), ("root-b-verity", None),
                                                ("quantix-data", None)])
def test_a_verity_boot_is_the_slot_its_root_hash_names(tmp_path: Path, partname: str, slot: str | None) -> None:
    from qx_common.slot import booted_slot

    links, sysfs = _kernel_parsed(tmp_path, partname)
    assert booted_slot(VERITY_CMDLINE, by_partuuid=links, sys_class_block=sysfs) == slot
    # The PARTLABEL form needs no disk at all; the last root= still decides.
    assert booted_slot(f"{VERITY_CMDLINE} root=PARTLABEL=root-a", by_partuuid=links, sys_class_block=sysfs) == "a"
    assert booted_slot(f"{VERITY_CMDLINE} root=/dev/sda2", by_partuuid=links, sys_class_block=sysfs) is None


@pytest.mark.parametrize("cmdline", [
    f"root=/dev/mapper/root roothash={'f' * 64}",              # no partition has that UUID
    "root=/dev/mapper/root roothash=" + "0" * 64,              # the build's placeholder: never sealed
    "root=/dev/mapper/root roothash=0123",                     # not a sha256
    f"root=/dev/mapper/root roothash={ROOTHASH.upper()}",      # ... nor is upper case
    "root=/dev/mapper/root",
])
def test_a_root_hash_naming_no_slot_is_no_slot(tmp_path: Path, cmdline: str) -> None:
    from qx_common.slot import booted_slot

    links, sysfs = _kernel_parsed(tmp_path, "root-a")
    assert booted_slot(cmdline, by_partuuid=links, sys_class_block=sysfs) is None


@pytest.mark.root
def test_a_verity_boot_on_a_real_gpt_and_every_package_agrees(tmp_path: Path) -> None:
    """A loop-device disk in the verity layout whose slot B holds the UUIDs a root hash names (set with
    sfdisk, as qx_update.seal does): qx-update, qx-node and the console all say B; a root hash whose
    data half is the *verity* partition's UUID, or no partition's, is no slot."""
    import subprocess

    from qx_common import verity
    from qx_common.errors import EnvironmentError_
    from qx_common.slot import booted_slot
    from qx_console.host.context import HostContext
    from qx_console.host.machine import Machine
    from qx_node import telemetry
    from qx_update.slots import running_slot
    from tests.common.loopgpt import loop_gpt

    layout = [("esp", "2MiB"), ("root-a", "4MiB"), ("root-a-verity", "1MiB"), ("root-b", "4MiB"),
              ("root-b-verity", "1MiB"), ("quantix-data", "2MiB")]
    with loop_gpt(tmp_path / "disk.img", layout, size_mib=16) as disk:
        data_uuid, hash_uuid = verity.partuuids(ROOTHASH)
        for name, value in (("root-b", data_uuid), ("root-b-verity", hash_uuid)):
            number = str(list(disk.nodes).index(name) + 1)
            # As qx_update.seal sets them: without a re-read (the kernel here would drop partx's partitions).
            subprocess.run(["sfdisk", "-q", "--no-reread", "--no-tell-kernel", "--part-uuid", disk.dev, number, value],
                           check=True, capture_output=True)
        root = tmp_path / "root"
        links = disk.link_by_partuuid(root / "dev/disk/by-partuuid")
        (root / "sys/class").mkdir(parents=True)
        (root / "sys/class/block").symlink_to("/sys/class/block")
        (root / "proc").mkdir()
        (root / "proc/cmdline").write_text(VERITY_CMDLINE + "\n")
        sysfs = Path("/sys/class/block")

        assert booted_slot(VERITY_CMDLINE, by_partuuid=links, sys_class_block=sysfs) == "b"
        assert running_slot("auto", root / "proc/cmdline", by_partuuid=links, sys_class_block=sysfs) == "b"
        assert telemetry.running_slot(root / "proc/cmdline", by_partuuid=links, sys_class_block=sysfs) == "b"
        assert Machine(HostContext(root=root)).slot() == "B"

        # The hash partition's UUID as the data half: not a slot (a verity partition is never booted).
        swapped = hash_uuid.replace("-", "") + data_uuid.replace("-", "")
        assert booted_slot(f"root=/dev/mapper/root roothash={swapped}", by_partuuid=links,
                           sys_class_block=sysfs) is None
        (root / "proc/cmdline").write_text(f"root=/dev/mapper/root roothash={'e' * 64}\n")
        with pytest.raises(EnvironmentError_, match="roothash="):
            running_slot("auto", root / "proc/cmdline", by_partuuid=links, sys_class_block=sysfs)
        assert Machine(HostContext(root=root)).slot() == "?"
