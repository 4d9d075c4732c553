"""The ESP as qx-update sees it: a mounted directory holding the layout of :mod:`qx_update.bootentry`.

Operations, each crash-safe on its own (temp file + fsync + rename, then fsync of the directory):

* :meth:`Esp.slots` — per slot: its entry name (boot counter), version and command line.
* :meth:`Esp.remove_entry` — before a slot is overwritten its entry goes, so a half-written slot is
  never bootable.
* :meth:`Esp.install` — UKI first, then the entry ``quantix-<slot>+<tries>.conf``: the rename of the
  entry is the switch. With ``default quantix-*`` the newest version boots first (bootentry.boot_order).
* :meth:`Esp.mark_bad` — an operator rollback: the entry is renamed as systemd-boot would when tries run
  out, so the bootloader falls back by the same rule as an automatic rollback.

The running slot's entry is never touched by an update of the other slot.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from qx_common.errors import EnvironmentError_
from qx_update import bootentry as be
from qx_update import crashpoint
from qx_update.fsutil import atomic_copy, atomic_write, fsync_dir


@dataclass(frozen=True)
class SlotEntry:
    name: be.EntryName
    version: str
    options: str
    efi: str

    @property
    def path(self) -> str:
        return f"{be.ENTRIES_DIR}/{self.name.filename}"


def find_esp(configured: str) -> Path:
    """The ESP directory: the configured one, or the first of /efi, /boot that holds loader/entries."""
    if configured != "auto":
        p = Path(configured)
        if not (p / be.ENTRIES_DIR).is_dir():
            raise EnvironmentError_(f"ESP {p}: no {be.ENTRIES_DIR} directory",
                                    hint="set esp = <the mounted ESP> in the update config")
        return p
    for cand in (Path("/efi"), Path("/boot")):
        if (cand / be.ENTRIES_DIR).is_dir():
            return cand
    raise EnvironmentError_("the ESP is not mounted (no loader/entries under /efi or /boot)",
                            hint="mount it (systemd-gpt-auto-generator does at boot) or set esp = <dir> in the config")


class Esp:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.entries_dir = root / be.ENTRIES_DIR

    def _entry_files(self) -> list[tuple[be.EntryName, Path]]:
        out = []
        for p in sorted(self.entries_dir.iterdir()):
            name = be.parse_entry_name(p.name)
            if name is not None and p.is_file():
                out.append((name, p))
        return out

    def slots(self) -> dict[str, SlotEntry]:
        """The entry of each slot that has one (if a crash left two, the counted one is ignored)."""
        found: dict[str, SlotEntry] = {}
        for name, p in self._entry_files():
            fields = be.parse_entry(p.read_text())
            entry = SlotEntry(name, fields.get("version", "?"), fields.get("options", ""), fields.get("efi", ""))
            prev = found.get(name.slot)
            if prev is None or (prev.name.tries_left is not None and name.tries_left is None):
                found[name.slot] = entry
        return found

    def default_slot(self) -> str | None:
        """The slot systemd-boot will boot next (None if there is no Quantix entry at all)."""
        slots = self.slots()
        order = be.boot_order({e.name: e.version for e in slots.values()})
        return order[0].slot if order else None

    def remove_entry(self, slot: str) -> None:
        for name, p in self._entry_files():
            if name.slot == slot:
                p.unlink()
        fsync_dir(self.entries_dir)

    def install(self, *, slot: str, version: str, uki: Path, base_cmdline: str, tries: int) -> SlotEntry:
        """Copy the UKI, then write the slot's counted entry (the rename is the switch)."""
        atomic_copy(uki, self.root / be.uki_path(version))
        crashpoint.reached("switch")
        self.remove_entry(slot)
        name = be.EntryName(slot, tries)
        text = be.render_entry(version=version, slot=slot, base_cmdline=base_cmdline)
        target = self.entries_dir / name.filename
        tmp = self.entries_dir / f".{name.filename}.tmp"   # not *.conf: systemd-boot ignores it
        with tmp.open("w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        crashpoint.reached("entry-tmp")
        os.replace(tmp, target)
        fsync_dir(self.entries_dir)
        if not (self.root / be.LOADER_CONF).exists():
            atomic_write(self.root / be.LOADER_CONF, be.render_loader_conf())
        return SlotEntry(name, version, be.slot_cmdline(base_cmdline, slot), f"/{be.uki_path(version)}")

    def mark_bad(self, slot: str) -> None:
        for name, p in self._entry_files():
            if name.slot == slot:
                os.replace(p, p.with_name(be.mark_bad(name).filename))
        fsync_dir(self.entries_dir)

    def gc_ukis(self) -> list[str]:
        """Remove Quantix UKIs no entry refers to (a crash between UKI copy and entry leaves one)."""
        used = {e.efi.lstrip("/") for e in self.slots().values()}
        removed = []
        uki_dir = self.root / be.UKI_DIR
        if uki_dir.is_dir():
            for p in sorted(uki_dir.iterdir()):
                rel = f"{be.UKI_DIR}/{p.name}"
                if p.name.startswith("."):
                    p.unlink()  # a temp file of an interrupted copy
                elif p.suffix == ".efi" and rel not in used:
                    p.unlink()
                    removed.append(rel)
        for p in self.entries_dir.glob(".*.tmp"):
            p.unlink()
        return removed
