"""Write a release into a slot and make it the next boot — the one code path for ``qx-update apply``
(online or ``--from``) and the installer's Upgrade.

Order (each step crash-safe, see :mod:`qx_update.esp` and :mod:`qx_update.slots`):

1. remove the target slot's boot entry and forget what the state said about it (a half-written slot is
   never bootable);
2. write the slot from the zstd payload (or through the caller's writer: a delta update) and read it
   back against the expected hash;
3. record ``pending`` (so the health gate and ``qx-update blessed`` finish the job after the reboot) —
   before the switch, so no power cut can lose it;
4. copy the UKI, write ``quantix-<slot>+<tries>.conf`` — the switch.

The caller owns the lock, the state file's location and how to save it (``save``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from qx_common import log
from qx_update import crashpoint, esp, slots, state

ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Release:
    """What the slot writer needs to know about a release, whoever verified it (TUF or the medium)."""

    version: str
    security_epoch: int
    slot_size: int
    slot_sha256: str
    kernel_cmdline: str


def write_and_switch(*, e: esp.Esp, st: state.State, save: Callable[[], None], rel: Release, payload: Path | None,
                     uki: Path, target: str, running: str, slot_path: Path, from_version: str, tries: int,
                     progress: bool | ProgressFn = True, write: Callable[[], None] | None = None) -> esp.SlotEntry:
    """``write``: writes and proves the slot itself (a delta update, :mod:`qx_update.delta`) instead of
    the zstd ``payload``; it must raise unless the slot reads back as ``rel.slot_sha256``."""
    log.step(f"writing {rel.version} into slot {target.upper()} ({slot_path})")
    e.remove_entry(target)
    st.slots.pop(target, None)
    save()
    crashpoint.reached("entry-removed")
    if write is not None:
        write()
    else:
        assert payload is not None, "write_and_switch needs a payload or a writer"
        slots.write_payload(payload, slot_path, slot_size=rel.slot_size, slot_sha256=rel.slot_sha256,
                            progress=progress)
    crashpoint.reached("written")
    # The record comes before the switch: whatever instant power is cut, the state either describes the
    # switched slot or describes a slot the ESP does not boot (then readers ignore it: pending_effective).
    st.pending = {"slot": target, "version": rel.version, "security_epoch": rel.security_epoch,
                  "from_slot": running, "from_version": from_version, "at": state.now_iso()}
    st.slots[target] = {"version": rel.version, "security_epoch": rel.security_epoch, "at": state.now_iso()}
    st.gate.pop(target, None)
    st.rollback = None
    st.last_error = None
    st.event("applied", version=rel.version, slot=target, from_version=from_version)
    save()
    log.step(f"installing the boot entry for slot {target.upper()} with {tries} tries")
    entry = e.install(slot=target, version=rel.version, uki=uki, base_cmdline=rel.kernel_cmdline, tries=tries)
    crashpoint.reached("switched")
    e.gc_ukis()
    return entry


def pending_effective(st: state.State, entries: dict[str, esp.SlotEntry]) -> dict | None:
    """The pending record if the ESP really holds it (its slot's entry has its version), else None:
    a record written just before a power cut that came before the switch describes nothing."""
    p = st.pending
    if not p:
        return None
    ent = entries.get(p.get("slot", ""))
    return p if ent is not None and ent.version == p.get("version") else None
