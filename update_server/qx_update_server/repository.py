"""The signed TUF repository on disk, and every operation that changes it.

Layout (served as static files, see docs/update-format.md section 2)::

    <data-dir>/repository/metadata/N.root.json, root.json, N.targets.json, N.snapshot.json, timestamp.json
    <data-dir>/repository/targets/<version>/<sha256>.quantix-os_<version>.{root.erofs.zst,efi}

``consistent_snapshot`` is on, so a change writes only *new* files — except ``timestamp.json``, which
is replaced atomically and is always written last. The order of every change is fixed:

1. artifacts: moved into ``targets/`` (already verified against manifest + SHA256SUMS), fsynced;
2. ``N+1.targets.json``; 3. ``M+1.snapshot.json``; 4. ``timestamp.json``.

A crash anywhere before step 4 leaves files no client can reach yet (the current ``timestamp.json``
still names the old snapshot, which names the old targets), so the repository still verifies, and
the next change simply writes those version numbers again. The current state is always read back from
disk by following ``timestamp.json`` — never kept in memory — so a restarted server needs no repair
for publishes. A root rotation writes ``N+1.root.json`` before re-signing the chain with the new keys;
:meth:`Repository.repair` (run at every start) finishes that step if a crash interrupted it.

All changes hold one lock (a thread lock plus ``flock`` on the data directory), so two publishes —
even from two server processes on one data directory — are serialized.
"""

from __future__ import annotations

import copy
import datetime as dt
import fcntl
import os
import re
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from securesystemslib.signer import CryptoSigner
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.serialization.json import CanonicalJSONSerializer
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)

from qx_common import log
from qx_common.errors import EnvironmentError_, InternalError, UserError
from qx_common.version import version_key
from qx_update_server import contract
from qx_update_server.fsutil import atomic_write, crashpoint, fsync_dir
from qx_update_server.keys import KeyDir
from qx_update_server.release import Release, sha256_file

_log = log.get("update_server.repository")

ONLINE_ROLES = ("targets", "snapshot", "timestamp")
LIFETIME = {
    "root": dt.timedelta(days=365),
    "targets": dt.timedelta(days=90),
    "snapshot": dt.timedelta(days=7),
    "timestamp": dt.timedelta(days=1),
}
# Re-sign an online role when less than this is left (about half its lifetime); for root, warn.
RENEW = {
    "root": dt.timedelta(days=60),
    "targets": dt.timedelta(days=30),
    "snapshot": dt.timedelta(days=3),
    "timestamp": dt.timedelta(hours=12),
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


@dataclass
class State:
    """The current signed metadata, as reachable from ``timestamp.json``."""

    root: Metadata[Root]
    targets: Metadata[Targets]
    snapshot: Metadata[Snapshot]
    timestamp: Metadata[Timestamp]


class Repository:
    def __init__(self, data_dir: Path, *, root_keys_dir: Path | None = None) -> None:
        self.data_dir = data_dir
        self.repo_dir = data_dir / "repository"
        self.metadata_dir = self.repo_dir / "metadata"
        self.targets_dir = self.repo_dir / "targets"
        self.online_keys = KeyDir(data_dir / "keys" / "online")
        self.root_keys = KeyDir(root_keys_dir or data_dir / "root-keys")
        self._thread_lock = threading.RLock()

    # ---- locking and reading -------------------------------------------------------------------

    @contextmanager
    def locked(self) -> Iterator[None]:
        with self._thread_lock:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.data_dir / ".repository.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # closing releases the flock

    def initialized(self) -> bool:
        return (self.metadata_dir / "timestamp.json").is_file()

    def _require_init(self) -> None:
        if not self.initialized():
            raise UserError("the repository has no keys yet", hint="run: qx-release keys init")

    def root_versions(self) -> list[int]:
        out = []
        for p in self.metadata_dir.glob("*.root.json"):
            m = re.fullmatch(r"(\d+)\.root\.json", p.name)
            if m:
                out.append(int(m.group(1)))
        return sorted(out)

    def root_bytes(self, version: int = 1) -> bytes:
        """A root to bootstrap a client with (``1.root.json`` is what a host ships with)."""
        return (self.metadata_dir / f"{version}.root.json").read_bytes()

    def load(self) -> State:
        self._require_init()
        versions = self.root_versions()
        root = Metadata[Root].from_file(str(self.metadata_dir / f"{versions[-1]}.root.json"))
        ts = Metadata[Timestamp].from_file(str(self.metadata_dir / "timestamp.json"))
        snap = Metadata[Snapshot].from_file(
            str(self.metadata_dir / f"{ts.signed.snapshot_meta.version}.snapshot.json"))
        tv = snap.signed.meta["targets.json"].version
        targets = Metadata[Targets].from_file(str(self.metadata_dir / f"{tv}.targets.json"))
        return State(root, targets, snap, ts)

    # ---- signing --------------------------------------------------------------------------------

    def _online_signers(self, roots: list[Root], role: str) -> list[CryptoSigner]:
        """The online keys of ``role`` in each of ``roots`` (two roots while a rotation is under way)."""
        out: dict[str, CryptoSigner] = {}
        for root in roots:
            signers = self.online_keys.signers(root.roles[role].keyids)
            if not signers:
                raise EnvironmentError_(f"no online key for the {role} role in {self.online_keys.path}",
                                        hint="restore the data directory's keys/online from a backup")
            out.update((s.public_key.keyid, s) for s in signers)
        return list(out.values())

    def _sign(self, md: Metadata[Any], roots: list[Root], role: str) -> None:
        for i, signer in enumerate(self._online_signers(roots, role)):
            md.sign(signer, append=i > 0)

    def _write(self, name: str, md: Metadata[Any]) -> None:
        atomic_write(self.metadata_dir / name, md.to_bytes())

    def _commit(self, state: State, *, targets: Targets | None, now: dt.datetime,
                resign_snapshot: bool = True, next_root: Root | None = None) -> None:
        """Sign and write new targets (optional), snapshot (optional) and timestamp — in that order.

        With ``next_root`` every role is signed by the keys of both roots, so the chain verifies for
        hosts that already follow the next root and for those that do not yet.
        """
        roots = [state.root.signed] + ([next_root] if next_root else [])
        snap = state.snapshot.signed
        if targets is not None:
            targets.version = state.targets.signed.version + 1
            targets.expires = now + LIFETIME["targets"]
            md_t = Metadata(targets)
            self._sign(md_t, roots, "targets")
            self._write(f"{targets.version}.targets.json", md_t)
            crashpoint("targets")
            snap.meta["targets.json"] = MetaFile(version=targets.version)
        if targets is not None or resign_snapshot:
            snap.version += 1
            snap.expires = now + LIFETIME["snapshot"]
            md_s = Metadata(snap)
            self._sign(md_s, roots, "snapshot")
            self._write(f"{snap.version}.snapshot.json", md_s)
            crashpoint("snapshot")
        ts = state.timestamp.signed
        ts.version += 1
        ts.expires = now + LIFETIME["timestamp"]
        ts.snapshot_meta = MetaFile(version=snap.version)
        md_ts = Metadata(ts)
        self._sign(md_ts, roots, "timestamp")
        self._write("timestamp.json", md_ts)
        crashpoint("timestamp")

    # ---- keys -----------------------------------------------------------------------------------

    def init(self, *, root_keys: int = 1, threshold: int = 1, now: dt.datetime | None = None) -> None:
        """Create keys and version 1 of every role (an empty targets list)."""
        if not 1 <= threshold <= root_keys:
            raise UserError(f"threshold: {threshold} must be between 1 and the number of root keys ({root_keys})")
        now = now or utcnow()
        with self.locked():
            if self.initialized():
                raise UserError("the repository already has keys", hint="use keys rotate to replace them")
            root = Root(expires=now + LIFETIME["root"], consistent_snapshot=True)
            root_signers = [self.root_keys.generate() for _ in range(root_keys)]
            for s in root_signers:
                root.add_key(s.public_key, "root")
            root.roles["root"].threshold = threshold
            for role in ONLINE_ROLES:
                root.add_key(self.online_keys.generate().public_key, role)
            self._write_root(Metadata(root), root_signers)
            (self.targets_dir).mkdir(parents=True, exist_ok=True)
            targets = Targets(version=1, expires=now + LIFETIME["targets"])
            md_t = Metadata(targets)
            self._sign(md_t, [root], "targets")
            self._write("1.targets.json", md_t)
            snap = Snapshot(version=1, expires=now + LIFETIME["snapshot"], meta={"targets.json": MetaFile(1)})
            md_s = Metadata(snap)
            self._sign(md_s, [root], "snapshot")
            self._write("1.snapshot.json", md_s)
            ts = Timestamp(version=1, expires=now + LIFETIME["timestamp"], snapshot_meta=MetaFile(1))
            md_ts = Metadata(ts)
            self._sign(md_ts, [root], "timestamp")
            self._write("timestamp.json", md_ts)
        _log.info("repository initialized: %d root key(s), threshold %d, in %s", root_keys, threshold,
                  self.root_keys.path)

    def _write_root(self, md: Metadata[Root], signers: list[CryptoSigner]) -> None:
        for i, s in enumerate(signers):
            md.sign(s, append=i > 0)
        data = md.to_bytes()
        atomic_write(self.metadata_dir / f"{md.signed.version}.root.json", data)
        crashpoint("root")
        atomic_write(self.metadata_dir / "root.json", data)

    def rotate(self, *, now: dt.datetime | None = None) -> int:
        """New root keys and online keys in root version N+1, signed by old and new root keys.

        Hosts that trust root N fetch ``N+1.root.json``, check it against N's keys and threshold, and
        from then on trust only the new keys. Needs ``threshold`` of the current root keys.
        """
        now = now or utcnow()
        with self.locked():
            state = self.load()
            old = state.root.signed
            old_role = old.roles["root"]
            old_signers = self.root_keys.signers(old_role.keyids)
            if len(old_signers) < old_role.threshold:
                raise EnvironmentError_(
                    f"keys rotate needs {old_role.threshold} of the current root keys, found {len(old_signers)} "
                    f"in {self.root_keys.path}",
                    hint="bring the offline root keys back and pass their directory with --root-keys-dir")
            new = Root.from_dict(copy.deepcopy(old.to_dict()))  # to_dict shares lists
            new.version = old.version + 1
            new.expires = now + LIFETIME["root"]
            retired: list[tuple[KeyDir, str]] = []
            for role in ("root", *ONLINE_ROLES):
                for keyid in list(new.roles[role].keyids):
                    new.revoke_key(keyid, role)
                    retired.append((self.root_keys if role == "root" else self.online_keys, keyid))
            new_root_signers = [self.root_keys.generate() for _ in old_role.keyids]
            for s in new_root_signers:
                new.add_key(s.public_key, "root")
            new.roles["root"].threshold = old_role.threshold
            for role in ONLINE_ROLES:
                new.add_key(self.online_keys.generate().public_key, role)
            # 1. chain signed by old and new online keys: valid under root N and N+1;
            # 2. root N+1; 3. chain signed by the new keys only. A crash anywhere leaves a valid chain.
            state = self.load()
            self._commit(state, targets=Targets.from_dict(copy.deepcopy(state.targets.signed.to_dict())),
                         now=now, next_root=new)
            self._write_root(Metadata(new), old_signers[: old_role.threshold] + new_root_signers)
            self._resign_all(now)
            for keydir, keyid in retired:
                (keydir.path / f"{keyid}.pem").unlink(missing_ok=True)
            _log.info("root rotated to version %d", new.version)
            return new.version

    def _resign_all(self, now: dt.datetime) -> None:
        state = self.load()
        self._commit(state, targets=Targets.from_dict(copy.deepcopy(state.targets.signed.to_dict())), now=now)

    def repair(self, *, now: dt.datetime | None = None) -> bool:
        """Re-sign the chain if it does not verify against the newest root (a rotation was cut short)."""
        if not self.initialized():
            return False
        with self.locked():
            state = self.load()
            root = state.root.signed
            try:
                for role, md in (("targets", state.targets), ("snapshot", state.snapshot),
                                 ("timestamp", state.timestamp)):
                    root.verify_delegate(role, CanonicalJSONSerializer().serialize(md.signed), md.signatures)
                if root.version > 1 and self.metadata_dir.joinpath("root.json").read_bytes() != \
                        self.root_bytes(root.version):
                    raise UnsignedMetadataError("root.json is not the newest root")
            except UnsignedMetadataError:
                _log.warning("repository: finishing an interrupted key rotation (re-signing)")
                atomic_write(self.metadata_dir / "root.json", self.root_bytes(root.version))
                self._resign_all(now or utcnow())
                return True
            return False

    def key_status(self, now: dt.datetime | None = None) -> dict[str, Any]:
        now = now or utcnow()
        state = self.load()
        root = state.root.signed
        roles: dict[str, Any] = {}
        for role, md in (("root", state.root), ("targets", state.targets), ("snapshot", state.snapshot),
                         ("timestamp", state.timestamp)):
            left = md.signed.expires - now
            keyids = root.roles[role].keyids
            keydir = self.root_keys if role == "root" else self.online_keys
            roles[role] = {
                "version": md.signed.version,
                "expires": contract.iso_z(md.signed.expires),
                "days_left": round(left.total_seconds() / 86400, 2),
                "threshold": root.roles[role].threshold,
                "keyids": keyids,
                "keys_present": len(keydir.signers(keyids)),
                # Online roles renew themselves; root needs an operator with the offline keys.
                "warning": (f"root expires in {left.days} days: run qx-release keys rotate"
                            if role == "root" and left < RENEW["root"] else
                            f"{role} expires in {left} and was not renewed: is the server running?"
                            if role != "root" and left < RENEW[role] / 2 else None),
            }
        return {"roles": roles, "root_keys_dir": str(self.root_keys.path)}

    def refresh(self, *, now: dt.datetime | None = None) -> list[str]:
        """Re-sign online roles that expire within RENEW; returns the roles written (timestamp last)."""
        now = now or utcnow()
        with self.locked():
            state = self.load()
            due = {r for r, md in (("targets", state.targets), ("snapshot", state.snapshot),
                                   ("timestamp", state.timestamp)) if md.signed.expires - now < RENEW[r]}
            if not due:
                return []
            if "targets" in due:
                self._commit(state, targets=Targets.from_dict(copy.deepcopy(state.targets.signed.to_dict())), now=now)
                return ["targets", "snapshot", "timestamp"]
            self._commit(state, targets=None, now=now, resign_snapshot="snapshot" in due)
            return (["snapshot"] if "snapshot" in due else []) + ["timestamp"]

    # ---- releases -------------------------------------------------------------------------------

    def releases(self) -> list[dict[str, Any]]:
        """One entry per version (newest first), from the signed targets metadata."""
        state = self.load()
        out: dict[str, dict[str, Any]] = {}
        for path, tf in state.targets.signed.targets.items():
            q = (tf.custom or {}).get("quantix")
            if not q:
                continue
            entry = out.setdefault(q["version"], {k: v for k, v in q.items() if k != "artifact"} | {"targets": {}})
            entry["targets"][q["artifact"]] = {"path": path, "length": tf.length, "sha256": tf.hashes["sha256"]}
        return sorted(out.values(), key=lambda r: version_key(r["version"]), reverse=True)

    def publish(self, rel: Release, *, channel: str, notes: str = "", now: dt.datetime | None = None,
                move: bool = False) -> None:
        """Add a verified release; ``move=True`` moves its files out of a staging directory (else copies)."""
        contract.check_channel(channel)
        now = now or utcnow()
        with self.locked():
            state = self.load()
            if any(r["version"] == rel.version for r in self.releases()):
                raise UserError(f"version: {rel.version} is already published",
                                hint="versions are never reused; build a new version")
            vdir = self.targets_dir / rel.version
            vdir.mkdir(parents=True, exist_ok=True)
            targets = state.targets.signed
            for art in (rel.root, rel.uki):
                dest = vdir / f"{art.sha256}.{art.name}"
                tmp = vdir / f".{art.name}.tmp-{os.getpid()}"
                if move and art.path.stat().st_dev == vdir.stat().st_dev:
                    os.replace(art.path, tmp)
                else:
                    shutil.copyfile(art.path, tmp)
                with tmp.open("rb+") as f:
                    os.fsync(f.fileno())
                # Verified again where it will be served from: what we sign is what is on disk.
                if tmp.stat().st_size != art.size or sha256_file(tmp) != art.sha256:
                    tmp.unlink()
                    raise InternalError(f"{art.name}: changed while being moved into the repository")
                os.replace(tmp, dest)
                path = contract.target_path(rel.version, art.artifact)
                custom = contract.quantix_custom(
                    version=rel.version, artifact=art.artifact, channels=contract.channels_up_to(channel),
                    security_epoch=rel.security_epoch, slot_size=rel.slot_size, slot_sha256=rel.slot_sha256,
                    kernel_cmdline=rel.kernel_cmdline, rollout_start=now, notes=notes)
                targets.targets[path] = TargetFile(art.size, {"sha256": art.sha256}, path,
                                                   {"custom": {"quantix": custom}})
            fsync_dir(vdir)
            crashpoint("artifacts")
            self._commit(state, targets=targets, now=now)

    def _change(self, version: str, fn: Any, now: dt.datetime | None) -> dict[str, Any]:
        now = now or utcnow()
        with self.locked():
            state = self.load()
            targets = state.targets.signed
            hits = [tf for tf in targets.targets.values()
                    if (tf.custom or {}).get("quantix", {}).get("version") == version]
            if not hits:
                raise UserError(f"version: {version} is not published", hint="see qx-release list")
            for tf in hits:
                q = dict(tf.custom["quantix"])
                fn(q, now)
                tf.unrecognized_fields["custom"] = {**tf.custom, "quantix": q}
            self._commit(state, targets=targets, now=now)
            return next(r for r in self.releases() if r["version"] == version)

    def promote(self, version: str, *, to: str, now: dt.datetime | None = None) -> dict[str, Any]:
        contract.check_channel(to, "to")

        def fn(q: dict[str, Any], _now: dt.datetime) -> None:
            if q["yanked"]:
                raise UserError(f"version: {version} is yanked and cannot be promoted", hint="publish a new version")
            q["channels"] = contract.merge_channels(q["channels"], to)
        return self._change(version, fn, now)

    def yank(self, version: str, *, now: dt.datetime | None = None) -> dict[str, Any]:
        def fn(q: dict[str, Any], _now: dt.datetime) -> None:
            q["yanked"] = True
            q["channels"] = []
        return self._change(version, fn, now)

    def rollout(self, version: str, *, percent: float | None = None, paused: bool | None = None,
                now: dt.datetime | None = None) -> dict[str, Any]:
        if percent is not None and not 0 <= percent <= 100:
            raise UserError(f"percent: {percent} must be between 0 and 100")
        if percent is None and paused is None:
            raise UserError("rollout: give --percent N or --pause")

        def fn(q: dict[str, Any], now_: dt.datetime) -> None:
            if q["yanked"]:
                raise UserError(f"version: {version} is yanked; its rollout cannot change")
            r = dict(q["rollout"])
            if percent is not None:
                r["fraction"] = contract.encode_fraction(round(percent / 100, 6))
                r["paused"] = False if paused is None else paused
            if paused is not None:
                r["paused"] = paused
            q["rollout"] = r
        return self._change(version, fn, now)
