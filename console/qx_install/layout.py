"""The partition layout an install makes, and converting a disk of an older layout for a "keep data" install.

The layout is the image's own systemd-repart definitions (``image/repart``, in the payload as
``repart.d``): :func:`write_definitions` gives repart those files as an install uses them (slots are written
from the payload, so their build-time filesystem settings are dropped).

A disk installed before dm-verity holds ``esp``, ``root-a`` (2 GiB), ``root-b`` (2 GiB) and
``quantix-data``. A verity release's definitions give each slot a ``root-<slot>-verity`` partition right
after it, carved out of the same 2 GiB (2016 MiB + 32 MiB), so that the data partition of such a disk
keeps its place. :func:`conversion` computes the new table for such a disk, :func:`write` writes it:

* the slots' region — from the old ``root-a``'s start to the data partition's start — is laid out
  afresh, with the partitions a wipe makes there: systemd-repart itself lays them out from the same
  definitions on an empty scratch image of the disk's size and sector size (so types, flags and
  alignment are a wipe's), and they are moved to start where the old ``root-a`` started;
* every other partition — the ESP, the data partition, anything outside the region — keeps its entry
  exactly (start, size, type, UUID, name, flags), and none of its bytes is touched: only the GPT is
  written. The disk's GUID and usable range are kept too.

Invariants: :func:`conversion` writes nothing to the disk and refuses (:class:`UserError`) a disk whose new
slots would not fit the region, which has a partition other than the slots inside it, or a slot outside
it (the new table would name two partitions alike); :func:`write`
checks after writing that the data partition's entry is the one it had. The slots' old contents are
lost (a keep-data install rewrites slot A and clears slot B), so the caller converts only after removing
every boot entry (:mod:`qx_install.engine`): a cut while util-linux writes the table (backup header and
entries first, then the primary) leaves the old or the new table, both with the data partition in place.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qx_common import run as r
from qx_common.errors import ExternalError, InternalError, UserError
from qx_install.payload import Payload

DATA_LABEL = "quantix-data"
OLD_SLOT_LABELS = ("root-a", "root-b")      # the slots of every Quantix layout
# Keys of the image's definitions that make a partition's filesystem at build time. An install drops them
# for slots (written from the payload); a scratch layout (:func:`conversion`) drops them everywhere.
_BUILD_KEYS = {"Format", "CopyFiles", "ExcludeFiles", "ExcludeFilesTarget", "Minimize", "MakeDirectories",
               "Subvolumes", "CopyBlocks", "Verity", "VerityMatchKey"}
_ALWAYS_DROP = {"SplitName"}
_SAFE_NAME = re.compile(r"^[\w.+-]{0,36}$")   # a GPT name sfdisk's script syntax takes as is (quoted)


def write_definitions(payload: Payload, out: Path, *, bare: bool = False) -> None:
    """The payload's partition definitions as an install uses them, into the new directory ``out``: slots
    lose their build-time filesystem, everything else is kept as ``make image`` has it. ``bare``: no
    partition gets a filesystem (a layout only: sizes, types, flags)."""
    out.mkdir()
    for d in payload.definitions():
        lines = ["[Partition]"]
        for key, value in d.settings:
            if key in _ALWAYS_DROP or ((bare or d.is_slot) and key in _BUILD_KEYS):
                continue
            lines.append(f"{key}={value}")
        (out / d.file).write_text("\n".join(lines) + "\n")


def slot_labels(payload: Payload) -> list[str]:
    """The labels of the payload's slot partitions (slots and their verity partitions), in file order."""
    return [d.label for d in payload.definitions() if d.is_slot]


def read_table(disk: str | Path) -> dict[str, Any]:
    """``sfdisk --json``'s partition table of ``disk`` (a device or an image file)."""
    out = r.run(["sfdisk", "--json", str(disk)]).stdout
    try:
        table = json.loads(out or "{}")["partitiontable"]
    except (ValueError, KeyError, TypeError) as e:
        raise ExternalError(f"{disk}: sfdisk --json printed no partition table ({e})",
                            hint="check the disk with: sfdisk --list " + str(disk)) from e
    table.setdefault("partitions", [])
    return table


def labels_of(table: dict[str, Any]) -> set[str]:
    return {p.get("name", "") for p in table["partitions"]}


@dataclass(frozen=True)
class Conversion:
    """The new table of a disk: ``table`` (sfdisk's header fields) and ``entries`` by start, each as
    sfdisk's JSON has them; ``kept`` is the data partition's entry, which must come back unchanged."""

    disk: str
    table: dict[str, Any]
    entries: tuple[dict[str, Any], ...]
    kept: dict[str, Any]

    def size_of(self, label: str) -> int:
        """Bytes of the new partition ``label``."""
        for e in self.entries:
            if e.get("name") == label:
                return int(e["size"]) * int(self.table["sectorsize"])
        raise InternalError(f"the new layout of {self.disk} has no partition {label}")

    def describe(self) -> str:
        return ", ".join(f"{e.get('name') or '?'} at sector {e['start']} ({e['size']} sectors)" for e in self.entries)


def conversion(disk: str, payload: Payload, *, disk_size: int) -> Conversion | None:
    """The table that gives ``disk`` the payload's slot partitions with everything else kept (see the
    module docstring); None when the disk has them all already. Writes nothing to ``disk``."""
    table = read_table(disk)
    wanted = slot_labels(payload)
    if set(wanted) <= labels_of(table):
        return None
    if table.get("label") != "gpt":
        raise UserError(f"{disk}: not a GPT disk", hint="choose mode 'wipe' (a new partition table)")
    by_name = {p.get("name", ""): p for p in table["partitions"]}
    for label in (*OLD_SLOT_LABELS, DATA_LABEL):
        if label not in by_name:
            raise UserError(f"{disk}: no partition labelled '{label}'",
                            hint="this disk does not hold a Quantix layout: choose mode 'wipe'")
    start, end = int(by_name["root-a"]["start"]), int(by_name[DATA_LABEL]["start"])
    inside = [p for p in table["partitions"] if _overlaps(p, start, end)]
    slot_names = {*OLD_SLOT_LABELS, *wanted}
    if stray := [p.get("name") or p.get("node", "?") for p in inside if p.get("name") not in slot_names]:
        raise UserError(f"{disk}: partition(s) {', '.join(stray)} lie between root-a and the data partition",
                        hint="choose mode 'wipe' (erases the disk), or move them away first")
    slots = _shifted(_scratch_layout(payload, disk_size, int(table["sectorsize"]), wanted), start)
    last = slots[-1]
    if int(last["start"]) + int(last["size"]) > end:
        need = (int(last["start"]) + int(last["size"]) - start) * int(table["sectorsize"])
        have = (end - start) * int(table["sectorsize"])
        raise UserError(f"{disk}: the slots of release {payload.version} need {need} bytes before the data "
                        f"partition, this disk has {have}",
                        hint="choose mode 'wipe' (erases the data partition: back it up first)")
    kept = [p for p in table["partitions"] if p not in inside]
    if outside := [p.get("name") for p in kept if p.get("name") in slot_names]:
        # Kept beside the new slots of the same name: two partitions one label names (qx-update writes by label).
        raise UserError(f"{disk}: partition {', '.join(outside)} lies outside the slots' region (from root-a to the "
                        "data partition)", hint="this is not a layout an install made: choose mode 'wipe'")
    for p in kept:
        if not _SAFE_NAME.match(p.get("name", "")):
            raise UserError(f"{disk}: partition {p.get('node', '?')} has a name sfdisk cannot be given back "
                            f"({p.get('name')!r})", hint="rename it (sfdisk --part-label) or choose mode 'wipe'")
    entries = tuple(sorted([*kept, *slots], key=lambda p: int(p["start"])))
    return Conversion(disk=disk, table=table, entries=entries, kept=dict(by_name[DATA_LABEL]))


def write(conv: Conversion) -> None:
    """Write ``conv``'s table to its disk (GPT only: no partition's bytes), then check that the data
    partition's entry came back unchanged. The caller makes the kernel re-read the table."""
    r.run(["sfdisk", "--no-reread", "--no-tell-kernel", "--wipe", "never", "--wipe-partitions", "never", "--quiet",
           conv.disk], input=_script(conv))
    after = {p.get("name", ""): p for p in read_table(conv.disk)["partitions"]}.get(DATA_LABEL)
    if after is None or any(str(after.get(k)) != str(conv.kept.get(k)) for k in ("start", "size", "uuid", "type")):
        raise InternalError(f"{conv.disk}: the data partition's entry changed in the new table: "
                            f"{conv.kept} -> {after}")


def _overlaps(p: dict[str, Any], start: int, end: int) -> bool:
    return int(p["start"]) < end and int(p["start"]) + int(p["size"]) > start


_SCRATCH_SECTOR = 512   # sfdisk reads an image file's GPT in 512-byte sectors only (it has no --sector-size)


def _scratch_layout(payload: Payload, disk_size: int, sector_size: int, wanted: list[str]) -> list[dict[str, Any]]:
    """The slot partitions systemd-repart makes from the payload's definitions on an empty image of
    ``disk_size`` bytes (sparse, in a private temporary directory), by start, in sectors of ``sector_size``
    bytes. The image has 512-byte sectors whatever the disk's (a 4 KiB-sector GPT in a file is one sfdisk
    cannot read): the slots' sizes and 4 KiB alignment are in bytes, so they are the same; a slot that
    would not fall on the disk's sectors is refused."""
    with tempfile.TemporaryDirectory(prefix="qx-install-layout-") as tmp:
        defs, img = Path(tmp) / "repart.d", Path(tmp) / "layout.img"
        write_definitions(payload, defs, bare=True)
        with img.open("wb") as f:
            f.truncate(disk_size)
        r.run(["systemd-repart", "--dry-run=no", "--empty=force", "--no-pager", "--seed=random", "--offline=yes",
               "--json=off", f"--sector-size={_SCRATCH_SECTOR}", f"--definitions={defs}", str(img)])
        parts = [p for p in read_table(img)["partitions"] if p.get("name") in wanted]
    if sorted(p["name"] for p in parts) != sorted(wanted):
        raise InternalError(f"systemd-repart made {[p.get('name') for p in parts]}, not the slots {wanted}")
    out = []
    for p in parts:
        start, size = int(p["start"]) * _SCRATCH_SECTOR, int(p["size"]) * _SCRATCH_SECTOR
        if start % sector_size or size % sector_size:
            raise InternalError(f"the payload's partition {p['name']} ({size} bytes at {start}) does not fall on "
                                f"the disk's {sector_size}-byte sectors")
        out.append({**p, "start": start // sector_size, "size": size // sector_size})
    return sorted(out, key=lambda p: int(p["start"]))


def _shifted(parts: list[dict[str, Any]], start: int) -> list[dict[str, Any]]:
    """``parts`` moved together so that the first starts at sector ``start``, with fresh UUIDs
    (sfdisk makes them: the scratch image's are no partition's)."""
    delta = start - int(parts[0]["start"])
    keys = ("start", "size", "type", "name", "attrs")
    return [{**{k: p[k] for k in keys if k in p}, "start": int(p["start"]) + delta} for p in parts]


def _script(conv: Conversion) -> str:
    t = conv.table
    head = ["label: gpt", f"label-id: {t['id']}", "unit: sectors", f"first-lba: {t['firstlba']}",
            f"last-lba: {t['lastlba']}", f"sector-size: {t['sectorsize']}", ""]
    return "\n".join(head + [_line(e) for e in conv.entries]) + "\n"


def _line(e: dict[str, Any]) -> str:
    fields = [f"start={int(e['start'])}", f"size={int(e['size'])}", f"type={e['type']}"]
    if e.get("uuid"):
        fields.append(f"uuid={e['uuid']}")
    fields.append(f'name="{e.get("name", "")}"')
    if e.get("attrs"):
        fields.append(f'attrs="{e["attrs"]}"')
    return ", ".join(fields)
