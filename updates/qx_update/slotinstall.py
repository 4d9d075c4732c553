"""Write a release into a slot and make it the next boot — the one code path for ``qx-update apply``
(online or ``--from``) and the installer's Upgrade.

Order (each step crash-safe, see :mod:`qx_update.esp`, :mod:`qx_update.slots` and :mod:`qx_update.seal`):

0. a dm-verity release — one whose UKI's *own* signed command line has ``roothash=``
   (:func:`verity_roothash`; the TUF ``kernel_cmdline`` is a copy nobody boots, so it decides nothing) —
   is refused here unless the target slot has its verity partition (a host installed before verity
   has none), and when another partition of the disk already carries the UUIDs its root hash names
   (the other slot holds the same root: :func:`qx_update.seal.check_unclaimed`): nothing is written;
1. remove the target slot's boot entry and forget what the state said about it (a half-written slot is
   never bootable); for a verity release, give the slot and its verity partition random GPT UUIDs
   (:func:`qx_update.seal.unseal`: no root hash finds the slot while it is written);
2. write the slot from the zstd payload (or through the caller's writer: a delta update) and read it
   back against the expected hash;
3. a verity release: build the slot's hash tree from the bytes written, check its root hash against
   the UKI's, write it to the verity partition, then set both partitions' UUIDs to the ones the root
   hash names (:func:`qx_update.seal.seal`) — what makes this slot the one the UKI boots;
4. record ``pending`` (so the health gate and ``qx-update blessed`` finish the job after the reboot) —
   before the switch, so no power cut can lose it;
5. copy the UKI, write ``quantix-<slot>+<tries>.conf`` — the switch. A verity release's entry carries
   the UKI's own command line unchanged (:func:`qx_update.bootentry.slot_cmdline`), so the entry and the
   signed UKI boot the same root with Secure Boot off or on; a release before verity keeps its
   ``kernel_cmdline`` with ``root=PARTLABEL=`` of the slot, as before.

The caller owns the lock, the state file's location and how to save it (``save``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from qx_common import log, verity
from qx_common.errors import EnvironmentError_
from qx_update import crashpoint, esp, seal, secureboot, slots, state
from qx_update.errors import VerificationError

ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Release:
    """What the slot writer needs to know about a release, whoever verified it (TUF or the medium)."""

    version: str
    security_epoch: int
    slot_size: int
    slot_sha256: str
    kernel_cmdline: str


REINSTALL_HINT = ("reinstall from the ISO with 'keep data' (the VMs and the host configuration stay): it "
                  "gives the disk the verity partitions; until then this host takes no verity release")


def verity_roothash(uki: Path, verity_path: Path | None, *, rel: Release, target: str) -> str | None:
    """The root hash release ``rel``'s UKI boots, read from its own ``.cmdline`` (what the firmware and
    systemd-stub boot; never the TUF ``kernel_cmdline``), or None for a release before verity.
    Raises — before anything is written — for a UKI whose ``roothash=`` is malformed or whose last
    ``root=`` is not the verity device, a release before verity whose ``kernel_cmdline`` names a root hash
    anyway (its entry could boot nothing), and a verity release this host cannot seal into slot
    ``target``: no verity partition at ``verity_path`` (a host installed before verity), or one too small
    for the tree."""
    cmdline = secureboot.uki_cmdline(uki)
    try:
        roothash = verity.roothash_of(cmdline)
        if roothash is None:
            if verity.roothash_of(rel.kernel_cmdline) is not None:
                raise verity.VerityError("its signed kernel_cmdline has roothash=, its UKI's own command line none")
            return None
        roots = [w for w in (cmdline or "").split() if w.startswith("root=")]
        if roots and roots[-1] != f"root={verity.VERITY_ROOT_DEVICE}":
            # The last root= is what the initrd mounts: anything but the verity device boots the slot unverified.
            raise verity.VerityError(f"its UKI's command line has roothash= but mounts {roots[-1]}, "
                                     f"not root={verity.VERITY_ROOT_DEVICE}")
        need = verity.tree_size(rel.slot_size)
    except verity.VerityError as err:
        raise VerificationError(f"release {rel.version}: {err}; nothing was installed",
                                hint="the release's UKI and metadata do not belong together: publish it again "
                                     "from one build") from err
    if verity_path is None or not verity_path.exists():
        raise EnvironmentError_(
            f"release {rel.version} boots a dm-verity root, but slot {target.upper()} has no verity partition "
            f"({verity_path or 'none configured'}: this host was installed before verity); nothing was installed",
            hint=REINSTALL_HINT)
    # A plain file (tests, image files) grows; a partition must hold the tree before the slot is written.
    if verity_path.is_block_device() and (have := slots.size_of(verity_path)) < need:
        raise EnvironmentError_(
            f"release {rel.version}: slot {target.upper()}'s verity partition {verity_path} has {have} bytes, "
            f"its hash tree needs {need}; nothing was installed", hint=REINSTALL_HINT)
    return roothash


def write_and_switch(*, e: esp.Esp, st: state.State, save: Callable[[], None], rel: Release, payload: Path | None,
                     uki: Path, target: str, running: str, slot_path: Path, verity_path: Path | None,
                     from_version: str, tries: int, progress: bool | ProgressFn = True,
                     write: Callable[[], None] | None = None) -> esp.SlotEntry:
    """``write``: writes and proves the slot itself (a delta update, :mod:`qx_update.delta`) instead of
    the zstd ``payload``; it must raise unless the slot reads back as ``rel.slot_sha256``.
    ``verity_path``: the target slot's dm-verity partition (None: the host has none; a verity release is
    then refused before anything is written)."""
    roothash = verity_roothash(uki, verity_path, rel=rel, target=target)
    # The entry's command line: a verity release's is its UKI's own (the one Secure Boot boots anyway).
    cmdline = rel.kernel_cmdline if roothash is None else (secureboot.uki_cmdline(uki) or "")
    if roothash is not None:
        assert verity_path is not None  # verity_roothash refused the release otherwise
        seal.check_unclaimed(slot_path, verity_path, roothash)  # one root in two slots: refused, nothing written
    log.step(f"writing {rel.version} into slot {target.upper()} ({slot_path})")
    e.remove_entry(target)
    st.slots.pop(target, None)
    save()
    crashpoint.reached("entry-removed")
    if roothash is not None:
        assert verity_path is not None  # verity_roothash refused the release otherwise
        seal.unseal(slot_path, verity_path)
    if write is not None:
        write()
    else:
        assert payload is not None, "write_and_switch needs a payload or a writer"
        slots.write_payload(payload, slot_path, slot_size=rel.slot_size, slot_sha256=rel.slot_sha256,
                            progress=progress)
    crashpoint.reached("written")
    if roothash is not None:
        assert verity_path is not None
        seal.seal(slot_path, verity_path, slot_size=rel.slot_size, slot_sha256=rel.slot_sha256, roothash=roothash,
                  progress=progress)
        crashpoint.reached("sealed")
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
    entry = e.install(slot=target, version=rel.version, uki=uki, base_cmdline=cmdline, tries=tries)
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
