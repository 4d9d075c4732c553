"""dm-verity on the real image in QEMU: a root slot with one changed block is never used — the trial boot
fails, is not blessed, and systemd-boot returns to the other slot by itself.

The disk is the built release with a second release in slot B, made without a second build: slot A's
erofs plus one zero block, so that it has its own root hash (and its partitions their own UUIDs). It is
sealed the way the build seals (:mod:`qx_build.sealing`): hash tree in ``root-b-verity``, partition
UUIDs from the root hash, the release's UKI signed again with that root hash on its command line, and a
trial entry ``quantix-b+1.conf`` (one try) of a newer version, as ``qx-update apply`` leaves it. Then one
byte of slot B's first block — its erofs superblock, the first thing the root mount reads — changes.

systemd-boot boots B (newest, a try left); the initrd opens B's verity device by the root hash; the root
mount reads the changed block and dm-verity answers with an I/O error ("data block 0 is corrupted");
the mount fails, and the initrd's ``qx-trial-boot-failed.service`` reboots a trial boot instead of
waiting at an emergency shell. systemd-boot finds B without tries and boots A, whose node comes up healthy.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path

from qx_build import esp, gpt, pe, sealing, secureboot
from qx_build.paths import REPO, Release, read_mkosi_setting
from qx_common import verity
from qx_update import bootentry
from tests.e2e.conftest import BOOT_TIMEOUT
from tests.e2e.derive import bump

BOOT_FAILED = r"QUANTIX-NODE-UNHEALTHY.*|Failed to start qx-(?:boot-report|node)\S*"


def _disk_with_a_corrupted_trial_slot_b(release: Release, out: Path, tmp: Path) -> tuple[str, str]:
    """The disk described above; returns (slot A's root hash, slot B's)."""
    subprocess.run(["cp", "--sparse=always", str(release.disk), str(out)], check=True)
    by = {p.name: p for p in gpt.read_table(out)}
    uki_a = release.uki
    roothash_a = verity.roothash_of(pe.cmdline(uki_a))
    assert roothash_a is not None
    size_a = json.loads(release.manifest.read_text())["artifacts"]["root"]["slot_size_min"]
    root_b = tmp / "root-b.erofs"
    with out.open("rb") as f:
        f.seek(by["root-a"].start)
        root_b.write_bytes(f.read(size_a) + b"\0" * verity.BLOCK)
    tree = sealing.tree_of(root_b, root_b.stat().st_size, hashlib.sha256(root_b.read_bytes()).hexdigest())
    assert tree.roothash != roothash_a
    with out.open("r+b") as f:
        f.seek(by["root-b"].start)
        f.write(root_b.read_bytes())
    sealing.seal_disk(out, tree, slot="b")
    signing = secureboot.resolve(None, None, dev_keys=REPO / "build" / "keys")
    uki_b = tmp / "uki-b.efi"
    cmdline_b = sealing.seal_uki(uki_a, uki_b, tree.roothash, signing)
    version_b = bump(release.version, 1)
    e = esp.EspImage(out, source_date_epoch=int(read_mkosi_setting("SourceDateEpoch")))
    e.copy_in(uki_b, bootentry.uki_path(version_b))
    e.write_text(f"{bootentry.ENTRIES_DIR}/{bootentry.EntryName('b', 1).filename}",
                 bootentry.render_entry(version=version_b, slot="b", base_cmdline=cmdline_b))
    # One changed byte in slot B's erofs superblock (offset 1024), after sealing: what the tree no longer matches.
    with out.open("r+b") as f:
        f.seek(by["root-b"].start + 1024)
        byte = f.read(1)
        f.seek(by["root-b"].start + 1024)
        f.write(bytes([byte[0] ^ 0x01]))
    return roothash_a, tree.roothash


def test_a_changed_block_of_the_new_slot_fails_its_trial_boot_and_the_old_slot_boots(
        release: Release, guest_factory, tmp_path: Path) -> None:
    disk = tmp_path / "corrupted-b.raw"
    roothash_a, roothash_b = _disk_with_a_corrupted_trial_slot_b(release, disk, tmp_path)
    # The emergency mode of the failed trial boot is expected here: it reboots by itself.
    guest = guest_factory(disk=disk, crash=rb"Kernel panic - not syncing")
    corrupted = guest.wait_for(r"device-mapper: verity: \S+: data block \d+ is corrupted", BOOT_TIMEOUT)
    print(f"slot B: dm-verity refused a changed block {guest.elapsed():.0f} s after QEMU start: {corrupted.group(0)!r}")
    at = corrupted.end()
    guest.wait_for(r"this trial boot failed; rebooting to the previous slot", 300, after=at)
    node = guest.wait_for(r"QUANTIX-NODE-HEALTHY version=(\S+) health=(\{.*\})", BOOT_TIMEOUT, fail=BOOT_FAILED, after=at)
    print(f"slot A: node healthy after the fallback {guest.elapsed():.0f} s after QEMU start")
    assert node.group(1) == release.version
    assert not re.search(r"QUANTIX-NODE-HEALTHY", guest.log()[:at]), "slot B must not have come up"
    guest.stop()
    # systemd-boot counted B's one try (B is now "bad", sorted last) and booted A, whose entry stays blessed;
    # the healthy node above is A's: B's root never mounted. The guest wrote to its qcow2 overlay.
    after = tmp_path / "after.raw"
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(guest.machine.workdir / "disk.qcow2"),
                    str(after)], check=True)
    e = esp.EspImage(after, source_date_epoch=int(read_mkosi_setting("SourceDateEpoch")))
    assert e.list(bootentry.ENTRIES_DIR) == ["quantix-a.conf", "quantix-b+0-1.conf"], e.list(bootentry.ENTRIES_DIR)
    assert roothash_a != roothash_b
