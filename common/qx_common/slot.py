"""Which root slot a kernel command line boots — the one parser every package uses.

Two forms, :func:`booted_slot` knows both (every consumer asks it):

* A release before dm-verity: its boot entry passes ``root=PARTLABEL=root-a`` or ``root=PARTLABEL=root-b``
  (:func:`root_arg`). Like the kernel, the *last* ``root=`` word counts; the slot is known only when that
  word is exactly one of the two forms (``root=PARTLABEL=root-a.old``, ``root=/dev/vda2`` or no ``root=``
  at all — the live ISO — give ``None``): :func:`slot_from_cmdline`.
* A verity release: ``roothash=<64 hex> root=/dev/mapper/root`` (or no ``root=``). The initrd opens the
  partition whose GPT UUID is the root hash's first half (:func:`qx_common.verity.partuuids`), so the
  slot is that partition's GPT name — found through udev's ``/dev/disk/by-partuuid`` link and the
  kernel's ``PARTNAME`` in sysfs (or the GPT entry itself when the kernel added the partition without
  reading the table: ``partx``/BLKPG, e.g. a loop device on a kernel without GPT parsing). Anything else
  — no such partition, another name, a malformed root hash — gives ``None``.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from qx_common import verity

SLOTS = ("a", "b")
_PREFIX = "root=PARTLABEL=root-"


def root_arg(slot: str) -> str:
    if slot not in SLOTS:
        raise ValueError(f"slot must be one of {SLOTS}, not {slot!r}")
    return f"{_PREFIX}{slot}"


def root_label(slot: str) -> str:
    """The GPT label of a root slot (``root-a``)."""
    if slot not in SLOTS:
        raise ValueError(f"slot must be one of {SLOTS}, not {slot!r}")
    return f"root-{slot}"


def verity_label(slot: str) -> str:
    """The GPT label of a slot's dm-verity hash partition (``root-a-verity``; see :mod:`qx_common.verity`)."""
    if slot not in SLOTS:
        raise ValueError(f"slot must be one of {SLOTS}, not {slot!r}")
    return f"root-{slot}-verity"


def slot_from_cmdline(cmdline: str) -> str | None:
    roots = [w for w in cmdline.split() if w.startswith("root=")]
    if not roots:
        return None
    last = roots[-1]
    if last.startswith(_PREFIX) and last[len(_PREFIX):] in SLOTS:
        return last[len(_PREFIX):]
    return None


def booted_slot(cmdline: str, *, by_partuuid: Path = Path("/dev/disk/by-partuuid"),
                sys_class_block: Path = Path("/sys/class/block")) -> str | None:
    """The slot ("a"/"b") the running kernel's command line booted, in either form (module docstring);
    None when it is not a Quantix slot. Reads only links and small files: never raises."""
    found = slot_from_cmdline(cmdline)
    if found is not None:
        return found
    roots = [w for w in cmdline.split() if w.startswith("root=")]
    if roots and roots[-1] != f"root={verity.VERITY_ROOT_DEVICE}":
        return None  # the last root= mounts something else than the verity device
    try:
        roothash = verity.roothash_of(cmdline)
    except verity.VerityError:
        return None
    if roothash is None:
        return None
    data_uuid, _ = verity.partuuids(roothash)  # lowercase, as udev names its by-partuuid links
    try:
        node = (by_partuuid / data_uuid).resolve(strict=True)
    except (OSError, RuntimeError):  # no such partition (RuntimeError: a link loop, before Python 3.13)
        return None
    name = _partition_name(node, data_uuid, sys_class_block)
    for slot in SLOTS:
        if name == root_label(slot):
            return slot
    return None


def _partition_name(node: Path, partuuid: str, sys_class_block: Path) -> str | None:
    """The GPT name of partition device ``node``: the kernel's ``PARTNAME``, else read from the GPT
    entry whose unique GUID is ``partuuid`` (the kernel sets PARTNAME only when it parsed the table)."""
    sysdir = sys_class_block / node.name
    try:
        uevent = (sysdir / "uevent").read_text()
    except OSError:
        return None
    for line in uevent.splitlines():
        if line.startswith("PARTNAME="):
            return line.removeprefix("PARTNAME=")
    try:
        number = int((sysdir / "partition").read_text())
        disk = sysdir.resolve().parent.name
        sector = int((sys_class_block / disk / "queue" / "logical_block_size").read_text())
        return _gpt_entry_name(node.parent / disk, number, sector, partuuid)
    except (OSError, ValueError, OverflowError):  # OverflowError: a table whose offsets no seek reaches
        return None


def _gpt_entry_name(disk: Path, number: int, sector: int, partuuid: str) -> str | None:
    """Entry ``number``'s name in the primary GPT of ``disk`` (UEFI spec 5.3), if its unique GUID is
    ``partuuid`` — the check that the table read is the one the by-partuuid link was made from."""
    with disk.open("rb") as f:
        f.seek(sector)
        header = f.read(92)
        if len(header) < 92 or header[:8] != b"EFI PART":
            return None
        entries_lba = int.from_bytes(header[72:80], "little")
        count = int.from_bytes(header[80:84], "little")
        size = int.from_bytes(header[84:88], "little")
        if not 1 <= number <= count or size < 128:
            return None
        f.seek(entries_lba * sector + (number - 1) * size)
        entry = f.read(128)
    if len(entry) < 128 or str(uuid.UUID(bytes_le=entry[16:32])) != partuuid:
        return None
    return entry[56:128].decode("utf-16-le", "replace").split("\0", 1)[0]
