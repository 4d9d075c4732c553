"""A static TUF repository for the qx-update tests, built with python-tuf's ``tuf.api.metadata``.

It follows docs/update-format.md §2 (consistent snapshots, ed25519, ``custom.quantix`` on each target)
without any code of the update server. It also knows how to misbehave, for the attack tests: expire
the timestamp, sign with a key the root does not trust, serve stale targets under a new version number.

A release is published either as before dm-verity (a UKI stand-in without a command line; the signed
``kernel_cmdline`` with ``root=PARTLABEL=``) or, with ``verity=True``, as the image build makes one: a
real PE whose ``.cmdline`` carries the root hash of the slot's bytes (:func:`verity_cmdline`,
:func:`uki_with_cmdline`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

ROLES = ("root", "targets", "snapshot", "timestamp")
CMDLINE = "root=PARTLABEL=root-a rootfstype=erofs ro console=ttyS0,115200"
# A 2 KiB PE/COFF EFI binary (systemd-boot-efi, which make host-deps-test installs): the UKI stand-in
# that can carry a .cmdline section.
STUB = Path("/usr/lib/systemd/boot/efi/addonx64.efi.stub")


def verity_cmdline(slot_bytes: bytes) -> tuple[str, str]:
    """(root hash, command line) of a verity release whose slot holds ``slot_bytes``: the tree made as the
    build, the installer and qx-update make it (qx_common.verity, parameters from the slot's sha256)."""
    import io

    from qx_common import verity

    params = verity.params_for(hashlib.sha256(slot_bytes).hexdigest())
    roothash = verity.build(io.BytesIO(slot_bytes), len(slot_bytes), params).roothash
    return roothash, f"root=/dev/mapper/root rootfstype=erofs ro roothash={roothash} console=ttyS0,115200"


def uki_with_cmdline(cmdline: str, work: Path) -> Path:
    """The stub with a ``.cmdline`` section holding ``cmdline`` (as ukify lays one out), unsigned."""
    assert STUB.is_file(), f"{STUB} is missing: apt-get install systemd-boot-efi (make host-deps-test)"
    work.mkdir(parents=True, exist_ok=True)
    text = work / f"cmdline-{hashlib.sha256(cmdline.encode()).hexdigest()[:16]}"
    text.write_text(cmdline)
    out = text.with_suffix(".efi")
    subprocess.run(["objcopy", "--add-section", f".cmdline={text}", "--change-section-vma", ".cmdline=0x30000",
                    str(STUB), str(out)], check=True, capture_output=True)
    return out


def _in(days: float) -> dt.datetime:
    return (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=days)).replace(microsecond=0)


@dataclass
class Published:
    version: str
    root_path: str           # target path of the payload
    uki_path: str
    root_file: Path          # the file served for it (hash-prefixed name)
    uki_file: Path
    slot_bytes: bytes        # what must end up in the slot
    roothash: str | None = None   # a verity release: the root hash on its UKI's command line
    cmdline: str = CMDLINE        # the signed kernel_cmdline (a verity release: its UKI's own)


class TufRepo:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.meta_dir = base / "metadata"
        self.targets_dir = base / "targets"
        self.meta_dir.mkdir(parents=True, exist_ok=True)
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        self.signers = {r: CryptoSigner.generate_ed25519() for r in ROLES}
        root = Root(expires=_in(365), consistent_snapshot=True)
        for role in ROLES:
            root.add_key(self.signers[role].public_key, role)
        self.root = Metadata(root)
        self.targets = Metadata(Targets(expires=_in(30)))
        self.snapshot = Metadata(Snapshot(expires=_in(7)))
        self.timestamp = Metadata(Timestamp(expires=_in(1)))
        self._write_root()
        self.commit()

    # -- files ---------------------------------------------------------------------------------
    def _bytes(self, md: Metadata[Any]) -> bytes:
        return md.to_bytes(JSONSerializer(compact=False))

    def _sign(self, md: Metadata[Any], role: str, signer: CryptoSigner | None = None) -> None:
        md.signatures.clear()
        md.sign(signer or self.signers[role])

    def _write_root(self, extra_signers: list[CryptoSigner] = ()) -> None:  # type: ignore[assignment]
        self._sign(self.root, "root")
        for s in extra_signers:
            self.root.sign(s, append=True)
        (self.meta_dir / f"{self.root.signed.version}.root.json").write_bytes(self._bytes(self.root))

    @property
    def root_bytes(self) -> bytes:
        return (self.meta_dir / "1.root.json").read_bytes()

    def commit(self, *, targets_signer: CryptoSigner | None = None, timestamp_expires: dt.datetime | None = None) -> None:
        """New targets + snapshot + timestamp versions (what a publish does)."""
        self.targets.signed.version += 1
        self._sign(self.targets, "targets", targets_signer)
        tv = self.targets.signed.version
        (self.meta_dir / f"{tv}.targets.json").write_bytes(self._bytes(self.targets))
        self.snapshot.signed.meta["targets.json"] = MetaFile(version=tv)
        self.snapshot.signed.version += 1
        self._sign(self.snapshot, "snapshot")
        sv = self.snapshot.signed.version
        (self.meta_dir / f"{sv}.snapshot.json").write_bytes(self._bytes(self.snapshot))
        self.timestamp.signed.snapshot_meta = MetaFile(version=sv)
        self.timestamp.signed.version += 1
        self.timestamp.signed.expires = timestamp_expires or _in(1)
        self._sign(self.timestamp, "timestamp")
        (self.meta_dir / "timestamp.json").write_bytes(self._bytes(self.timestamp))

    def rotate_root(self) -> None:
        """Root v(n+1) with a new root key, signed by the old and the new key (a real rotation)."""
        old = self.signers["root"]
        new = CryptoSigner.generate_ed25519()
        r = self.root.signed
        r.revoke_key(old.public_key.keyid, "root")
        r.add_key(new.public_key, "root")
        r.version += 1
        self.signers["root"] = new
        self._write_root(extra_signers=[old])

    def add_release(self, version: str, *, slot_bytes: bytes, channels: list[str], security_epoch: int = 0,
                    rollout: dict[str, Any] | None = None, uki: bytes | None = None, slot_size: int | None = None,
                    commit: bool = True, verity: bool = False) -> Published:
        """``verity``: the release's UKI (unless ``uki`` is given) and ``kernel_cmdline`` carry the root hash
        of ``slot_bytes`` (a multiple of 4 KiB)."""
        comp = subprocess.run(["zstd", "-q", "-1", "-c"], input=slot_bytes, stdout=subprocess.PIPE, check=True).stdout
        roothash, cmdline = verity_cmdline(slot_bytes) if verity else (None, CMDLINE)
        if uki is None and verity:
            uki = uki_with_cmdline(cmdline, self.base / "ukis").read_bytes() + version.encode()
        uki = uki if uki is not None else b"MZ fake UKI " + version.encode() + os.urandom(64)
        q = {"version": version, "channels": channels, "security_epoch": security_epoch,
             "slot_size": slot_size if slot_size is not None else len(slot_bytes),
             "slot_sha256": hashlib.sha256(slot_bytes).hexdigest(), "kernel_cmdline": cmdline,
             "rollout": rollout or {"fraction": 1, "start": "2020-01-01T00:00:00Z", "paused": False},
             "notes": f"release {version}", "yanked": False}
        files = {}
        for artifact, name, data in (("root", f"quantix-os_{version}.root.erofs.zst", comp),
                                     ("uki", f"quantix-os_{version}.efi", uki)):
            path = f"{version}/{name}"
            tf = TargetFile.from_data(path, data, ["sha256"])
            tf.unrecognized_fields["custom"] = {"quantix": {**q, "artifact": artifact}}
            self.targets.signed.targets[path] = tf
            out = self.targets_dir / version / f"{tf.hashes['sha256']}.{name}"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(data)
            files[artifact] = (path, out)
        if commit:
            self.commit()
        return Published(version, files["root"][0], files["uki"][0], files["root"][1], files["uki"][1], slot_bytes,
                         roothash, cmdline)

    def stale_targets_attack(self) -> None:
        """Mix-and-match: a valid new snapshot/timestamp, but the targets file it names holds old targets."""
        stale = (self.meta_dir / f"{self.targets.signed.version}.targets.json").read_bytes()
        self.commit()
        (self.meta_dir / f"{self.targets.signed.version}.targets.json").write_bytes(stale)

    def freeze_attack(self) -> None:
        """Serve a timestamp that expired (a replayed or frozen repository)."""
        self.commit(timestamp_expires=_in(-1))

    def bad_signature_attack(self) -> None:
        """Targets signed by a key the root does not list."""
        self.commit(targets_signer=CryptoSigner.generate_ed25519())

    def metadata_rollback_attack(self, to_version: int) -> None:
        """Serve an older, validly signed timestamp (and with it old snapshot/targets)."""
        self._old_timestamps = getattr(self, "_old_timestamps", {})
        (self.meta_dir / "timestamp.json").write_bytes(self._old_timestamps[to_version])

    def remember_timestamp(self) -> int:
        self._old_timestamps = getattr(self, "_old_timestamps", {})
        v = self.timestamp.signed.version
        self._old_timestamps[v] = (self.meta_dir / "timestamp.json").read_bytes()
        return v

