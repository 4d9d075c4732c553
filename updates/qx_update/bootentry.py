"""Boot Loader Specification entries for Quantix slots on the ESP (systemd-boot, type #1).

Layout on the ESP (owned by this module; the image build and qx-update both write it):

* ``/EFI/quantix/quantix-os_<version>.efi`` — the UKI of a release (kernel, initrd, os-release).
* ``/loader/entries/quantix-<slot>[+LEFT[-DONE]].conf`` — one entry per slot (``a`` or ``b``).
  The entry passes the *whole* kernel command line; systemd-stub uses the loader's command line instead
  of the embedded one when Secure Boot is off (and ignores it when Secure Boot is on). For a release
  before dm-verity that line has ``root=`` naming the entry's slot (:func:`slot_cmdline`). A verity
  release's line is its UKI's own, unchanged: its ``roothash=`` picks the root — the slot whose partition
  UUIDs that hash names (:mod:`qx_common.verity`, sealed by :mod:`qx_update.seal`) — so the same words
  boot the same slot with Secure Boot on or off.
* ``/loader/keys/auto/{PK,KEK,db}.auth`` — the build's Secure Boot certificate, which systemd-boot offers
  to enroll while the firmware is in setup mode (``secure-boot-enroll manual``: an operator's choice).
* ``/loader/loader.conf`` — ``default quantix-*``. Entries carry ``sort-key quantix-os`` and
  ``version``: systemd-boot picks the newest version first and sorts entries whose tries ran out
  ("bad") last, which *is* the automatic rollback. The boot counter suffix (``+3``) is systemd's boot
  assessment: systemd-bless-boot drops it after ``boot-complete.target``; systemd-boot decrements it.

Invariant: an entry file is written complete (temp file + rename) before anything refers to it, and
the running slot's entry is never modified by an update of the other slot.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from qx_common import verity
from qx_common.slot import SLOTS, root_arg  # noqa: F401 - SLOTS is part of this module's API

SORT_KEY = "quantix-os"
ENTRY_PREFIX = "quantix-"
UKI_DIR = "EFI/quantix"
ENTRIES_DIR = "loader/entries"
LOADER_CONF = "loader/loader.conf"
ENROLL_KEYS_DIR = "loader/keys/auto"   # PK/KEK/db .auth that systemd-boot offers to enroll (see SECURE_BOOT_ENROLL)

_ENTRY_RE = re.compile(r"^quantix-(?P<slot>[ab])(?:\+(?P<left>\d+)(?:-(?P<done>\d+))?)?\.conf$")


@dataclass(frozen=True)
class EntryName:
    """A parsed entry file name: slot plus the systemd boot-assessment counters (None = blessed)."""

    slot: str
    tries_left: int | None = None
    tries_done: int | None = None

    @property
    def filename(self) -> str:
        if self.tries_left is None:
            return f"{ENTRY_PREFIX}{self.slot}.conf"
        if self.tries_done is None:
            return f"{ENTRY_PREFIX}{self.slot}+{self.tries_left}.conf"
        return f"{ENTRY_PREFIX}{self.slot}+{self.tries_left}-{self.tries_done}.conf"

    @property
    def blessed(self) -> bool:
        return self.tries_left is None

    @property
    def bad(self) -> bool:
        return self.tries_left == 0


def parse_entry_name(name: str) -> EntryName | None:
    m = _ENTRY_RE.match(name)
    if not m:
        return None
    left = m.group("left")
    done = m.group("done")
    return EntryName(m.group("slot"), int(left) if left is not None else None, int(done) if done is not None else None)


def uki_path(version: str) -> str:
    """Path of a release's UKI relative to the ESP root."""
    return f"{UKI_DIR}/quantix-os_{version}.efi"


def kernel_root_arg(slot: str) -> str:
    return root_arg(slot)


def slot_cmdline(base_cmdline: str, slot: str) -> str:
    """The release's command line with ``root=`` replaced by the slot's (other words kept in order) —
    or, for a verity command line (one with ``roothash=``), its words unchanged: its root is the verity
    device of the partitions its root hash names, and a ``root=PARTLABEL=`` here would mount the slot
    unverified (raises :class:`qx_common.verity.VerityError` for a malformed ``roothash=``). Either way
    one line: the words are joined by single spaces (an entry's ``options`` ends at the newline)."""
    if verity.roothash_of(base_cmdline) is not None:
        return " ".join(base_cmdline.split())
    words = [w for w in base_cmdline.split() if not w.startswith("root=")]
    return " ".join([kernel_root_arg(slot), *words])


def render_entry(*, version: str, slot: str, base_cmdline: str) -> str:
    return (
        f"title Quantix OS {version} (slot {slot.upper()})\n"
        f"sort-key {SORT_KEY}\n"
        f"version {version}\n"
        f"efi /{uki_path(version)}\n"
        f"options {slot_cmdline(base_cmdline, slot)}\n"
    )


# Secure Boot keys on the ESP (loader/keys/auto/, written by the image build) are enrolled only when an
# operator picks "Enroll Secure Boot keys: auto" in the boot menu of a firmware in setup mode: never by
# itself, not even in a VM ("if-safe") — replacing a server's PK drops the vendor's keys, and with them
# the option ROMs of its RAID and network cards (docs/secure-boot.md).
SECURE_BOOT_ENROLL = "manual"


def render_loader_conf(timeout_s: int = 3) -> str:
    return (f"timeout {timeout_s}\ndefault {ENTRY_PREFIX}*\nconsole-mode keep\neditor no\n"
            f"secure-boot-enroll {SECURE_BOOT_ENROLL}\n")


def parse_entry(text: str) -> dict[str, str]:
    """Parse an entry file's ``key value`` lines (the last occurrence of a key wins)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        out[key] = value.strip()
    return out


def mark_bad(name: EntryName) -> EntryName:
    """The name systemd-boot gives an entry whose tries ran out (``+0-N``): sorted last, not booted."""
    done = (name.tries_done or 0) + (name.tries_left or 0)
    return EntryName(name.slot, 0, done or None)


def boot_order(entries: dict[EntryName, str]) -> list[EntryName]:
    """Which entry systemd-boot boots first with ``default quantix-*``: the model we rely on.

    systemd-boot sorts entries with no tries left ("bad") after all others, then by ``sort-key``
    (the same for every Quantix entry), then by ``version``, newest first; the default pattern picks
    the first match. ``entries`` maps a name to its ``version``.
    """
    from qx_common.version import version_key

    def key(item: tuple[EntryName, str]) -> tuple[int, tuple[int, ...]]:
        name, version = item
        try:
            vk = version_key(version)
        except ValueError:
            vk = (0, 0, 0, 0, "")
        neg = tuple(-x if isinstance(x, int) else 0 for x in vk)
        return (1 if name.bad else 0, neg)

    return [n for n, _ in sorted(entries.items(), key=key)]
