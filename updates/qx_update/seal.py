"""Sealing a written root slot for dm-verity: its hash tree and the partition UUIDs its UKI's root hash names.

Call order (:func:`qx_update.slotinstall.write_and_switch`, the installer's wipe): the slot is written and
read back against the signed ``slot_sha256`` first; then :func:`seal` builds the tree from those bytes
(:mod:`qx_common.verity`), refuses it unless its root hash is the one on the release's signed UKI command
line, writes it to the slot's verity partition (synced), and only then sets both partitions' GPT UUIDs
to the ones that root hash names. The boot entry is installed after that.

Crash safety: until the last step the slot's UUIDs are still its previous release's, whose UKI has no
entry any more (removed before the write), so no entry boots a half-sealed slot. The GPT update is
util-linux's (backup table first, then the primary; the kernel and the firmware fall back to the backup
when the primary's CRC is torn), and it touches neither the running slot's entries nor the data partition.
:func:`unseal` gives a slot fresh random UUIDs before it is overwritten, so that a slot which held the
same root hash as the other one (a reinstall of one release) is never found by that hash while half-written.

A slot that is a plain file (tests, or a host configured with image files) has no GPT entry: its tree is
written and checked all the same, and :func:`seal` says the UUIDs were not set.
"""

from __future__ import annotations

import json
import os
import stat
import uuid
from pathlib import Path

from qx_common import log
from qx_common import run as r
from qx_common import verity
from qx_common.errors import EnvironmentError_, ExternalError
from qx_common.progress import Observer, Progress
from qx_update.errors import VerificationError


def partition_of(dev: Path) -> tuple[Path, int] | None:
    """``(whole disk, partition number)`` of a partition block device, from sysfs; None for anything else."""
    try:
        st = dev.stat()
    except OSError as e:
        raise EnvironmentError_(f"{dev}: {e.strerror or e}") from e
    if not stat.S_ISBLK(st.st_mode):
        return None
    sysdir = Path(f"/sys/dev/block/{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}")
    try:
        number = int((sysdir / "partition").read_text())
        disk = (sysdir / "..").resolve().name
    except (OSError, ValueError):
        return None
    return Path("/dev") / disk, number


def partition_name(dev: Path) -> str | None:
    """The GPT name of partition ``dev`` as its disk's table has it now; None when ``dev`` is no partition."""
    where = partition_of(dev)
    if where is None:
        return None
    disk, number = where
    return r.run(["sfdisk", "--part-label", str(disk), str(number)]).stdout.rstrip("\n")


def set_partuuid(dev: Path, value: str) -> bool:
    """Set the GPT partition UUID of ``dev``; False when ``dev`` is no partition (nothing to set)."""
    where = partition_of(dev)
    if where is None:
        return False
    disk, number = where
    # The kernel keeps its table (the disk is busy: the running root is on it); the boot reads the new one.
    r.run(["sfdisk", "--no-reread", "--no-tell-kernel", "--part-uuid", str(disk), str(number), value])
    return True


def check_unclaimed(slot: Path, verity_dev: Path, roothash: str) -> None:
    """Refuse — before anything is written — to seal ``slot`` for ``roothash`` when another partition of
    its disk already carries one of the UUIDs that root hash names: the other slot holding the same root
    (one release in both slots). Two partitions with one UUID are two slots one root hash finds: the
    initrd opens whichever udev's by-partuuid link names last, so a slot's entry could boot the other
    slot, and :func:`qx_common.slot.booted_slot` could call the running slot the other one (qx-update
    would then refuse every later update as writing the running slot). The slot's own partitions are
    not counted (a run cut after sealing them and retried). A plain-file slot has no UUIDs: nothing to do."""
    where = partition_of(slot)
    if where is None:
        return
    disk, number = where
    own = [number]
    if (hw := partition_of(verity_dev)) is not None and hw[0] == disk:
        own.append(hw[1])
    out = r.run(["sfdisk", "--json", str(disk)]).stdout
    try:
        parts = json.loads(out)["partitiontable"]["partitions"]
        mine = [r.run(["sfdisk", "--part-uuid", str(disk), str(n)]).stdout.strip().lower() for n in own]
        others = [(str(p.get("uuid", "")).lower(), p.get("name") or p.get("node", "?")) for p in parts]
    except (ValueError, KeyError, TypeError) as e:
        raise ExternalError(f"{disk}: sfdisk --json printed no partition table ({e})",
                            hint=f"check the disk with: sfdisk --list {disk}") from e
    for u in mine:  # the slot's own entries (one each)
        others = [o for o in others if o[0] != u] + [o for o in others if o[0] == u][1:]
    wanted = verity.partuuids(roothash)
    for u, name in others:
        if u in wanted:
            raise EnvironmentError_(
                f"{disk}: partition {name} already carries the UUID {u} that root hash {roothash[:16]}… names "
                f"(it holds this release's root): sealing {slot} for it too would leave two slots that one root "
                "hash finds; nothing was installed",
                hint="boot the slot that holds this release (qx-update rollback, or the boot menu), or reinstall "
                     "from the ISO with 'keep data' (keep-data) to write it afresh")


def unseal(slot: Path, verity_dev: Path) -> None:
    """Fresh random UUIDs for a slot about to be overwritten (see the module docstring)."""
    set_partuuid(slot, str(uuid.uuid4()))
    set_partuuid(verity_dev, str(uuid.uuid4()))


def seal(slot: Path, verity_dev: Path, *, slot_size: int, slot_sha256: str, roothash: str,
         progress: bool | Observer = True) -> bool:
    """Build the slot's tree, check it against ``roothash``, write it, then set the UUIDs. Returns whether
    UUIDs were set (False for plain-file slots)."""
    verity.check_roothash(roothash)
    bar = Progress("sealing slot (dm-verity)", slot_size, enabled=progress)
    try:
        with slot.open("rb") as f:
            tree = verity.build(f, slot_size, verity.params_for(slot_sha256), progress=bar.update)
    except OSError as e:
        raise EnvironmentError_(f"slot {slot}: cannot read it back for its hash tree: {e.strerror or e}") from e
    except verity.VerityError as e:
        raise VerificationError(f"slot {slot}: {e}") from e
    bar.close()
    if tree.roothash != roothash:
        raise VerificationError(
            f"slot {slot}: its dm-verity root hash is {tree.roothash}, but the release's UKI boots {roothash}",
            hint="the release's UKI and root do not belong together: publish it again from one build")
    try:
        fd = os.open(verity_dev, os.O_WRONLY)
    except OSError as e:
        raise EnvironmentError_(f"verity partition {verity_dev}: cannot open: {e.strerror or e}",
                                hint="this host's disk has no verity partitions: reinstall from the ISO "
                                     "(keep data) to take verity releases") from e
    try:
        capacity = os.lseek(fd, 0, os.SEEK_END)
        if stat.S_ISREG(os.fstat(fd).st_mode):
            capacity = max(capacity, len(tree.image))
        if len(tree.image) > capacity:
            raise VerificationError(f"the slot's hash tree needs {len(tree.image)} bytes but {verity_dev} has {capacity}")
        os.lseek(fd, 0, os.SEEK_SET)
        view = memoryview(tree.image)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    data_uuid, hash_uuid = verity.partuuids(roothash)
    # Hash partition first: a cut between the two leaves the data partition unfindable by this root hash.
    done = set_partuuid(verity_dev, hash_uuid)
    done = set_partuuid(slot, data_uuid) and done
    log.step(f"sealed slot {slot} for root hash {roothash[:16]}…" + ("" if done else " (not a partition: no UUIDs)"))
    return done
