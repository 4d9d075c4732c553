"""The ESP as qx-update sees it: the layout of :mod:`qx_update.bootentry`, in a mounted directory
(:class:`DirFiles`, a host's ``/efi``) or in an unmounted FAT partition (:class:`qx_update.espfat.FatFiles`,
the installer and the image build — no vfat mount needed).

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
from typing import Protocol

from qx_common.errors import EnvironmentError_
from qx_update import bootentry as be
from qx_update import crashpoint
from qx_common.fs import atomic_copy, atomic_write, fsync_dir


@dataclass(frozen=True)
class SlotEntry:
    name: be.EntryName
    version: str
    options: str
    efi: str

    @property
    def path(self) -> str:
        return f"{be.ENTRIES_DIR}/{self.name.filename}"


class EspFiles(Protocol):
    """File access to an ESP by paths relative to its root ("loader/entries/x.conf")."""

    def names(self, directory: str) -> list[str]: ...          # regular files in it; [] when missing
    def read_text(self, path: str) -> str: ...
    def exists(self, path: str) -> bool: ...
    def write_temp(self, path: str, data: bytes) -> None: ...  # written and synced, not yet in place
    def write(self, path: str, data: bytes) -> None: ...       # atomic replace
    def copy_in(self, src: Path, path: str) -> None: ...       # atomic replace
    def rename(self, src: str, dst: str) -> None: ...
    def remove(self, path: str) -> None: ...
    def sync(self, directory: str) -> None: ...


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


class DirFiles:
    """The ESP mounted at ``root`` (a host's /efi, a test directory): temp file + fsync + rename."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def names(self, directory: str) -> list[str]:
        d = self.root / directory
        return sorted(p.name for p in d.iterdir() if p.is_file()) if d.is_dir() else []

    def read_text(self, path: str) -> str:
        return (self.root / path).read_text()

    def exists(self, path: str) -> bool:
        return (self.root / path).exists()

    def write_temp(self, path: str, data: bytes) -> None:
        p = self.root / path
        p.parent.mkdir(parents=True, exist_ok=True)
        with p.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def write(self, path: str, data: bytes) -> None:
        atomic_write(self.root / path, data)

    def copy_in(self, src: Path, path: str) -> None:
        atomic_copy(src, self.root / path)

    def rename(self, src: str, dst: str) -> None:
        os.replace(self.root / src, self.root / dst)
        fsync_dir((self.root / dst).parent)

    def remove(self, path: str) -> None:
        (self.root / path).unlink(missing_ok=True)

    def sync(self, directory: str) -> None:
        if (self.root / directory).is_dir():
            fsync_dir(self.root / directory)


class Esp:
    """Quantix's boot entries and UKIs on an ESP, through ``files`` (:class:`DirFiles` for a mounted
    directory, :class:`qx_update.espfat.FatFiles` for an unmounted FAT partition or image)."""

    def __init__(self, root: Path | EspFiles) -> None:
        self.files: EspFiles = DirFiles(root) if isinstance(root, Path) else root

    def _entry_files(self) -> list[tuple[be.EntryName, str]]:
        out = []
        for n in self.files.names(be.ENTRIES_DIR):
            name = be.parse_entry_name(n)
            if name is not None:
                out.append((name, f"{be.ENTRIES_DIR}/{n}"))
        return out

    def slots(self) -> dict[str, SlotEntry]:
        """The entry of each slot that has one (if a crash left two, the counted one is ignored)."""
        found: dict[str, SlotEntry] = {}
        for name, p in self._entry_files():
            fields = be.parse_entry(self.files.read_text(p))
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
                self.files.remove(p)
        self.files.sync(be.ENTRIES_DIR)

    def install(self, *, slot: str, version: str, uki: Path, base_cmdline: str, tries: int | None) -> SlotEntry:
        """Copy the UKI, then write the slot's entry (the rename is the switch). ``tries`` None: no boot
        counter (a fresh install's slot A, which has nothing to fall back to)."""
        self.files.copy_in(uki, be.uki_path(version))
        crashpoint.reached("switch")
        self.remove_entry(slot)
        name = be.EntryName(slot, tries)
        text = be.render_entry(version=version, slot=slot, base_cmdline=base_cmdline)
        target = f"{be.ENTRIES_DIR}/{name.filename}"
        tmp = f"{be.ENTRIES_DIR}/.{name.filename}.tmp"   # not *.conf: systemd-boot ignores it
        self.files.write_temp(tmp, text.encode())
        crashpoint.reached("entry-tmp")
        self.files.rename(tmp, target)
        if not self.files.exists(be.LOADER_CONF):
            self.files.write(be.LOADER_CONF, be.render_loader_conf().encode())
        return SlotEntry(name, version, be.slot_cmdline(base_cmdline, slot), f"/{be.uki_path(version)}")

    def mark_bad(self, slot: str) -> None:
        for name, p in self._entry_files():
            if name.slot == slot:
                self.files.rename(p, f"{be.ENTRIES_DIR}/{be.mark_bad(name).filename}")
        self.files.sync(be.ENTRIES_DIR)

    def gc_ukis(self) -> list[str]:
        """Remove Quantix UKIs no entry refers to (a crash between UKI copy and entry leaves one)."""
        used = {e.efi.lstrip("/") for e in self.slots().values()}
        removed = []
        for n in self.files.names(be.UKI_DIR):
            rel = f"{be.UKI_DIR}/{n}"
            if n.startswith("."):
                self.files.remove(rel)  # a temp file of an interrupted copy
            elif n.endswith(".efi") and rel not in used:
                self.files.remove(rel)
                removed.append(rel)
        for n in self.files.names(be.ENTRIES_DIR):
            if n.startswith(".") and n.endswith(".tmp"):
                self.files.remove(f"{be.ENTRIES_DIR}/{n}")
        return removed
