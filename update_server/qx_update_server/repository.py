"""The signed TUF repository on disk, and every operation that changes it.

Layout (served as static files, see docs/update-format.md section 2)::

    <data-dir>/repository/metadata/N.root.json, root.json, N.targets.json, N.snapshot.json, timestamp.json
    <data-dir>/repository/targets/<version>/<sha256>.quantix-os_<version>.{root.erofs.zst,efi}
    <data-dir>/repository/targets/<version>/<sha256>.quantix-os_<version>.{root,efi}.chunks.json
    <data-dir>/repository/targets/chunks/<aa>/<sha256>.zst   (shared by releases: qx_update_server.chunkstore)

``consistent_snapshot`` is on, so a change writes only *new* files — except ``timestamp.json``, which
is replaced atomically and is always written last. The order of every change is fixed:

1. artifacts: moved into ``targets/`` (already verified against manifest + SHA256SUMS), fsynced; each
   one's chunks stored and its chunk index written beside it (:mod:`.chunkstore`);
2. ``N+1.targets.json``; 3. ``M+1.snapshot.json``; 4. ``timestamp.json``.

A crash anywhere before step 4 leaves files no client can reach yet (the current ``timestamp.json``
still names the old snapshot, which names the old targets), so the repository still verifies, and
the next change simply writes those version numbers again. The current state is always read back from
disk by following ``timestamp.json`` — never kept in memory — so a restarted server needs no repair
for publishes. A root rotation writes ``N+1.root.json`` before re-signing the chain with the new keys;
:meth:`Repository.repair` (run at every start) finishes that step if a crash interrupted it.

All changes hold one lock (a thread lock plus ``flock`` on the data directory), so two publishes —
even from two server processes on one data directory — are serialized.

Bounded size (docs/update-format.md section 2.1). Every host downloads the whole targets metadata, and
a client refuses one over its limit, so the signed set never grows without bound:

* every field is bounded at publish (:mod:`.contract`), and a new targets version that is larger than
  :data:`contract.TARGETS_MAX_BYTES` *and* larger than the current one is refused — so changes that
  shrink it (yank, remove) always succeed;
* each publish first applies the retention rule (:func:`prune`): yanked releases and all but the
  newest :data:`contract.KEEP_SUPERSEDED` superseded ones leave the signed set; then at most
  :data:`contract.MAX_SIGNED_RELEASES` may remain, else the publish is refused with the fix;
* :meth:`Repository.remove` takes a release out of the signed set on demand.

A release that leaves the signed set is *retired* (``<data-dir>/retired.json``, outside the served
directory): its version is never published again, and its files under ``targets/`` are deleted once
:data:`RETIRED_FILES_GRACE` has passed (a host may be downloading them). Old ``N.targets.json`` and
``N.snapshot.json`` are deleted when :data:`KEEP_METADATA_VERSIONS` newer ones exist. Files under
``targets/`` that no signed metadata names (a crashed publish) are deleted by :meth:`Repository.repair`;
a publish that fails removes the files it moved in before it returns the error.
"""

from __future__ import annotations

import copy
import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.serialization.json import CanonicalJSONSerializer
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
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
from qx_update.contract import ContractError, ReleaseTarget, quantix_of
from qx_update.repo import release_role, role_version
from qx_update_server import chunkstore, contract
from qx_common.fs import atomic_write, fsync_dir
from qx_update_server.errors import NotFound
from qx_update_server.fsutil import crashpoint
from qx_update_server.keys import KeyDir
from qx_update_server.release import Release, sha256_file

_log = log.get("update_server.repository")
_KEY_FILE_MAX = 64 * 1024  # root_private_keys reads files up to this size
_PEM_PRIVATE = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----.+?-----END [A-Z ]*PRIVATE KEY-----", re.S)

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


# A client mid-refresh may still fetch the snapshot/targets versions that were current a moment ago.
KEEP_METADATA_VERSIONS = 10
# A host may be downloading a release's payload when it leaves the signed set; its files stay this long.
RETIRED_FILES_GRACE = dt.timedelta(days=1)


_RESTORE_HINT = ("the repository's metadata is damaged: restore <data-dir>/repository from a backup "
                 "(or from a qx-release export), then start the server again")


def _read_md(cls: Any, path: Path) -> Any:
    try:
        return cls.from_file(str(path))
    except FileNotFoundError as e:
        raise EnvironmentError_(f"{path}: missing (the signed metadata chain is broken)", hint=_RESTORE_HINT) from e
    except OSError as e:
        raise EnvironmentError_(f"{path}: cannot read it: {e.strerror or e}") from e
    except Exception as e:  # noqa: BLE001 - python-tuf's DeserializationError, ValueError, KeyError, ...
        raise EnvironmentError_(f"{path}: not valid TUF metadata ({type(e).__name__}: {e})", hint=_RESTORE_HINT) from e


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


@dataclass
class State:
    """The current signed metadata, as reachable from ``timestamp.json``.

    ``targets`` is the *flat view* every operation reads and edits: all release targets of every
    delegated role (and of the top-level role, for a repository signed before delegations), copies, with
    the top-level version and the earliest expiry of them all. :meth:`Repository._commit` splits it
    back into roles. ``top`` and ``roles`` are the signed files as they are on disk.
    """

    root: Metadata[Root]
    targets: Metadata[Targets]
    snapshot: Metadata[Snapshot]
    timestamp: Metadata[Timestamp]
    top: Metadata[Targets]
    roles: dict[str, Metadata[Targets]]


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
        """The current state, following timestamp → snapshot → targets; damaged or missing files are an
        :class:`EnvironmentError_` naming the file (never a traceback)."""
        self._require_init()
        versions = self.root_versions()
        if not versions:
            raise EnvironmentError_(f"{self.metadata_dir}: timestamp.json exists but no N.root.json",
                                    hint=_RESTORE_HINT)
        root = _read_md(Metadata[Root], self.metadata_dir / f"{versions[-1]}.root.json")
        ts = _read_md(Metadata[Timestamp], self.metadata_dir / "timestamp.json")
        snap = _read_md(Metadata[Snapshot], self.metadata_dir / f"{ts.signed.snapshot_meta.version}.snapshot.json")
        if "targets.json" not in snap.signed.meta:
            raise EnvironmentError_(f"{self.metadata_dir}: the snapshot names no targets.json", hint=_RESTORE_HINT)
        tv = snap.signed.meta["targets.json"].version
        top = _read_md(Metadata[Targets], self.metadata_dir / f"{tv}.targets.json")
        roles: dict[str, Metadata[Targets]] = {}
        for name in top.signed.delegations.roles or {} if top.signed.delegations else {}:
            meta = snap.signed.meta.get(f"{name}.json")
            if meta is None:
                raise EnvironmentError_(f"{self.metadata_dir}: the snapshot names no {name}.json", hint=_RESTORE_HINT)
            roles[name] = _read_md(Metadata[Targets], self.metadata_dir / f"{meta.version}.{name}.json")
        flat = Targets(version=top.signed.version,
                       expires=min([top.signed.expires, *(md.signed.expires for md in roles.values())]))
        # Copies: an operation edits the flat view, and _commit compares it with the roles as signed.
        for md in [top, *roles.values()]:
            for path, tf in md.signed.targets.items():
                flat.targets[path] = TargetFile.from_dict(copy.deepcopy(tf.to_dict()), path)
        return State(root, Metadata(flat), snap, ts, top, roles)

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
            self._commit_targets(state, targets, roots, now)
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

    def _commit_targets(self, state: State, flat: Targets, roots: list[Root], now: dt.datetime) -> None:
        """Split the flat view into one delegated role per release; write each role that changed, then the
        top-level targets if it changed; record them in the (not yet signed) snapshot.

        A role (or the top-level) is written again when its content differs, when it is not signed by
        exactly the keys that sign now (a key rotation), or when it expires within RENEW — so a promote
        rewrites one release's role, and hosts download only that. Release roles are signed by the
        online targets keys (the top-level delegates to those same keys), each with a terminating
        delegation for the paths ``<version>/*``.
        """
        snap = state.snapshot.signed
        keyids = {s.public_key.keyid for s in self._online_signers(roots, "targets")}
        wanted: dict[str, dict[str, TargetFile]] = {}
        for path, tf in flat.targets.items():
            q = _quantix(tf)
            if q is None:
                raise InternalError(f"target {path}: not a Quantix release target")
            wanted.setdefault(release_role(q.version), {})[path] = tf
        for name, tfs in wanted.items():
            cur = state.roles.get(name)
            role = Targets(version=1, expires=now + LIFETIME["targets"], targets=dict(tfs))
            if cur is not None:
                if not _stale(cur, keyids, now) and _same(cur.signed, role):
                    continue
                role.version = cur.signed.version + 1
            md = Metadata(role)
            self._sign(md, roots, "targets")
            data = md.to_bytes()
            atomic_write(self.metadata_dir / f"{role.version}.{name}.json", data)
            # With its length, a host never downloads more than the role's size for it.
            snap.meta[f"{name}.json"] = MetaFile(version=role.version, length=len(data))
        for name in set(state.roles) - set(wanted):
            snap.meta.pop(f"{name}.json", None)
        crashpoint("roles")

        keys = {k: root.keys[k] for root in roots for k in root.roles["targets"].keyids}
        threshold = state.root.signed.roles["targets"].threshold
        delegated = {name: DelegatedRole(name=name, keyids=sorted(keys), threshold=threshold, terminating=True,
                                         paths=[f"{role_version(name)}/*"])
                     for name in sorted(wanted, key=lambda n: version_key(role_version(n) or "0.0.0"), reverse=True)}
        top = Targets(version=state.top.signed.version, expires=now + LIFETIME["targets"],
                      targets=old_client_targets(flat),
                      delegations=Delegations(keys=dict(keys), roles=delegated) if delegated else None)
        if not _stale(state.top, keyids, now) and _same(state.top.signed, top):
            return
        top.version += 1
        md_t = Metadata(top)
        self._sign(md_t, roots, "targets")
        data = md_t.to_bytes()
        old_size = (self.metadata_dir / f"{state.top.signed.version}.targets.json").stat().st_size
        # Checked on the signed bytes, before anything is written. A change that does not grow the
        # file (yank, remove, re-sign) is always allowed, so an oversized repository can recover.
        if len(data) > contract.TARGETS_MAX_BYTES and len(data) > old_size:
            raise UserError(
                f"targets metadata: {len(data)} bytes would be over the limit of {contract.TARGETS_MAX_BYTES} "
                f"(hosts refuse more than {contract.CLIENT_TARGETS_MAX_LENGTH})",
                hint="remove releases no host needs (qx-release remove VERSION) or yank them, then retry")
        atomic_write(self.metadata_dir / f"{top.version}.targets.json", data)
        crashpoint("targets")
        snap.meta["targets.json"] = MetaFile(version=top.version)

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

    # ---- offline root keys (docs/update-format.md §2.3) -----------------------------------------

    @property
    def _offline_marker(self) -> Path:
        return self.data_dir / "keys" / "root-offline"

    def root_offline(self) -> bool:
        """True when this repository was set up from an offline root (``qx-update-server init``)."""
        return self._offline_marker.is_file()

    def setup_offline(self, root_file: Path, online_keys_dir: Path, *, now: dt.datetime | None = None) -> int:
        """Set up the repository from an administrator's root and online keys; no root key comes here.

        ``root_file`` is the offline directory's ``root.json``; when its version is N > 1, the versions
        1…N-1 are read from ``<n>.root.json`` next to it and each must follow from the one before (a host
        that ships version 1 walks the same chain). ``online_keys_dir`` holds ``<keyid>.pem`` files: at
        least a threshold for each of targets, snapshot and timestamp; a root private key there is
        refused. Writes the online keys, the marker, then metadata in the order of :meth:`init`.
        Returns the root version.
        """
        from qx_update_server import rootkeys  # the offline side's own checks, shared

        now = now or utcnow()
        newest = rootkeys.read_root(root_file, "--root")
        chain = [newest] if newest.signed.version == 1 else [
            rootkeys.read_root(root_file.with_name(f"{v}.root.json"), "--root")
            for v in range(1, newest.signed.version)] + [newest]
        first = chain[0].signed
        if first.version != 1:
            raise UserError(f"--root: {root_file.with_name('1.root.json')} is version {first.version}, not 1",
                            hint="give the root.json of an offline directory made by qx-release keys init --offline")
        try:
            first.verify_delegate(Root.type, chain[0].signed_bytes, chain[0].signatures)
        except UnsignedMetadataError as e:
            raise UserError(f"--root: root version 1 is not signed by a threshold of its own root keys ({e})",
                            hint="give the root.json that qx-release keys init --offline wrote") from e
        for prev, md in zip(chain, chain[1:]):
            rootkeys.verify_rotation(prev.signed, md, f"--root: {md.signed.version}.root.json")
        root = newest.signed
        if root.is_expired(now):
            raise UserError(f"--root: root version {root.version} expired at {contract.iso_z(root.expires)}",
                            hint="sign a new root version offline: qx-release keys sign-root --offline DIR")
        if not root.consistent_snapshot:
            raise UserError("--root: consistent_snapshot is false; this server serves consistent snapshots only",
                            hint="make the root with qx-release keys init --offline")
        found = _online_keys_for(root, online_keys_dir, {k for md in chain for k in md.signed.roles[Root.type].keyids})
        with self.locked():
            if self.initialized():
                raise UserError(f"--data-dir {self.data_dir}: the repository is already set up",
                                hint="a new root goes through qx-release keys push-root; a new server needs a "
                                     "new data directory")
            self.online_keys.path.mkdir(parents=True, exist_ok=True)
            os.chmod(self.online_keys.path, 0o700)
            for keyid, signer in found.items():
                atomic_write(self.online_keys.path / f"{keyid}.pem", signer.private_bytes, mode=0o600)
            atomic_write(self._offline_marker, b"root keys are offline: this server never holds one\n", mode=0o600)
            self.metadata_dir.mkdir(parents=True, exist_ok=True)
            for md in chain:
                atomic_write(self.metadata_dir / f"{md.signed.version}.root.json", md.to_bytes())
            atomic_write(self.metadata_dir / "root.json", newest.to_bytes())
            self.targets_dir.mkdir(parents=True, exist_ok=True)
            md_t = Metadata(Targets(version=1, expires=now + LIFETIME["targets"]))
            self._sign(md_t, [root], "targets")
            self._write("1.targets.json", md_t)
            md_s = Metadata(Snapshot(version=1, expires=now + LIFETIME["snapshot"], meta={"targets.json": MetaFile(1)}))
            self._sign(md_s, [root], "snapshot")
            self._write("1.snapshot.json", md_s)
            md_ts = Metadata(Timestamp(version=1, expires=now + LIFETIME["timestamp"], snapshot_meta=MetaFile(1)))
            self._sign(md_ts, [root], "timestamp")
            self._write("timestamp.json", md_ts)
        _log.info("repository set up from an offline root (version %d) in %s", root.version, self.data_dir)
        return root.version

    def add_online_keys(self, root_file: Path, online_keys_dir: Path) -> list[str]:
        """Install the online keys a root signed offline names, *before* it is pushed (new online keys).

        ``root_file`` is the offline directory's newest root: the current root, or version N+1 that
        follows from it (checked as :meth:`accept_root` will). Only keys its timestamp, snapshot and
        targets roles name are copied (0600); a root key among the files is refused. Returns their keyids.
        """
        from qx_update_server import rootkeys

        md = rootkeys.read_root(root_file, "--root")
        with self.locked():
            current = self.load().root.signed
            if md.signed.version != current.version:
                rootkeys.verify_rotation(current, md, f"--root: {root_file}")
            found = _online_keys_for(md.signed, online_keys_dir,
                                     set(current.roles[Root.type].keyids) | set(md.signed.roles[Root.type].keyids))
            self.online_keys.path.mkdir(parents=True, exist_ok=True)
            added = []
            for keyid, signer in found.items():
                if not (self.online_keys.path / f"{keyid}.pem").exists():
                    atomic_write(self.online_keys.path / f"{keyid}.pem", signer.private_bytes, mode=0o600)
                    added.append(keyid)
        _log.info("online keys added for root version %d: %s", md.signed.version, ", ".join(added) or "none new")
        return added

    def accept_root(self, data: bytes, *, now: dt.datetime | None = None) -> int:
        """Serve a root version signed offline, after checking it as a client will; returns its version.

        Refused (UserError, nothing written) unless it is version N+1 of the current root N, signed by a
        threshold of N's root keys and of its own, not expired, with consistent snapshots, and naming
        online keys this server holds. Then: the chain signed for both roots, ``N+1.root.json``,
        ``root.json``, the chain re-signed — the order of :meth:`rotate`, which :meth:`repair` finishes.
        """
        from qx_update_server import rootkeys

        now = now or utcnow()
        md = rootkeys.parse_root(data, "root")
        with self.locked():
            state = self.load()
            rootkeys.verify_rotation(state.root.signed, md, "root")
            new = md.signed
            if new.is_expired(now):
                raise UserError(f"root: version {new.version} expired at {contract.iso_z(new.expires)}",
                                hint="sign it again with a later expiry (qx-release keys sign-root --expires-days)")
            if not new.consistent_snapshot:
                raise UserError("root: consistent_snapshot is false; this server serves consistent snapshots only")
            for role in ONLINE_ROLES:
                have = self.online_keys.signers(new.roles[role].keyids)
                if len(have) < new.roles[role].threshold:
                    raise UserError(f"root: names {role} keys this server does not hold "
                                    f"({len(have)} of {new.roles[role].threshold} present in {self.online_keys.path})",
                                    hint="keep the online keys when signing a new root (qx-release keys sign-root "
                                         "does), or set up a new server with them")
            self._commit(state, targets=Targets.from_dict(copy.deepcopy(state.targets.signed.to_dict())),
                         now=now, next_root=new)
            atomic_write(self.metadata_dir / f"{new.version}.root.json", md.to_bytes())
            crashpoint("root")
            atomic_write(self.metadata_dir / "root.json", md.to_bytes())
            self._resign_all(now)
            # Online keys the new root no longer names (replaced, perhaps because one leaked) go now: the
            # whole chain is signed without them.
            named = {k for role in ONLINE_ROLES for k in new.roles[role].keyids}
            for pem in self.online_keys.path.glob("*.pem"):
                if pem.stem not in named:
                    pem.unlink(missing_ok=True)
        _log.info("root version %d accepted (signed offline)", new.version)
        return new.version

    def root_private_keys(self) -> list[Path]:
        """Every file in the data directory that holds a private key of a root role (any version)."""
        if not self.initialized():
            return []
        root_keyids: set[str] = set()
        for v in self.root_versions():
            root_keyids |= set(_read_md(Metadata[Root], self.metadata_dir / f"{v}.root.json")
                               .signed.roles[Root.type].keyids)
        out = []
        # By content, not by name: a key file renamed or copied anywhere in the data directory counts too,
        # whatever it is called ("root.key", "backup"). Only small files are read (a PEM key is a few
        # hundred bytes; artifacts are large) and no metadata: a key inside JSON would not be PEM text.
        for path in sorted(self.data_dir.rglob("*")):
            try:
                if path.suffix == ".json" or not path.is_file() or path.stat().st_size > _KEY_FILE_MAX:
                    continue
                data = path.read_bytes()
            except OSError:
                continue  # vanished or unreadable meanwhile: this process could not use it either
            for block in _PEM_PRIVATE.findall(data):
                try:
                    keyid = CryptoSigner(load_pem_private_key(block, None)).public_key.keyid
                except Exception:  # noqa: BLE001 - encrypted, damaged, or not a key type TUF signs with
                    continue
                if keyid in root_keyids:
                    out.append(path)
                    break
        return out

    def rotate(self, *, now: dt.datetime | None = None) -> int:
        """New root keys and online keys in root version N+1, signed by old and new root keys.

        Hosts that trust root N fetch ``N+1.root.json``, check it against N's keys and threshold, and
        from then on trust only the new keys. Needs ``threshold`` of the current root keys.
        """
        now = now or utcnow()
        if self.root_offline():
            raise UserError("keys rotate: this server's root keys are offline; it cannot sign a root",
                            hint="sign the new root offline and upload it: qx-release keys sign-root, then "
                                 "qx-release keys push-root")
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
        """Re-sign the chain if it does not verify against the newest root (a rotation was cut short).

        Also deletes what a crash may have left: files under ``targets/`` that no signed metadata
        names (a publish killed before its timestamp) and retired files past their grace.
        """
        if not self.initialized():
            return False
        with self.locked():
            self._gc(now or utcnow(), chunks=True)
            state = self.load()
            root = state.root.signed
            try:
                for role, md in (("targets", state.top), ("snapshot", state.snapshot),
                                 ("timestamp", state.timestamp)):
                    root.verify_delegate(role, CanonicalJSONSerializer().serialize(md.signed), md.signatures)
                for name, md in state.roles.items():
                    state.top.signed.verify_delegate(name, CanonicalJSONSerializer().serialize(md.signed),
                                                     md.signatures)
                if root.version > 1 and self.metadata_dir.joinpath("root.json").read_bytes() != \
                        self.root_bytes(root.version):
                    raise UnsignedMetadataError("root.json is not the newest root")
            except UnsignedMetadataError:
                _log.warning("repository: finishing an interrupted key rotation (re-signing)")
                atomic_write(self.metadata_dir / "root.json", self.root_bytes(root.version))
                self._resign_all(now or utcnow())
                return True
            if any(release_role(q.version) not in state.roles
                   for tf in state.top.signed.targets.values() if (q := _quantix(tf))):
                # Signed before delegated roles existed: move every release into its own role once.
                _log.warning("repository: moving releases into delegated targets roles")
                self._resign_all(now or utcnow())
                return True
            return False

    def key_status(self, now: dt.datetime | None = None) -> dict[str, Any]:
        now = now or utcnow()
        state = self.load()
        root = state.root.signed
        offline = self.root_offline()
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
                "warning": (f"root expires in {left.days} days: run " + (
                    "qx-release keys sign-root --offline DIR, then keys push-root" if offline
                    else "qx-release keys rotate")
                            if role == "root" and left < RENEW["root"] else
                            f"{role} expires in {left} and was not renewed: is the server running?"
                            if role != "root" and left < RENEW[role] / 2 else None),
            }
        return {"roles": roles, "root_keys_dir": str(self.root_keys.path),
                # Development setups keep root keys on the server (keys init through the API); say so.
                "root_keys": "offline" if offline else "on this server (development)"}

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

    # ---- retention and garbage collection --------------------------------------------------------

    @property
    def _retired_path(self) -> Path:
        return self.data_dir / "retired.json"

    def retired(self) -> dict[str, dict[str, str]]:
        """version -> {"at": ISO time, "reason": yanked|superseded|removed} of every release that left."""
        try:
            doc = json.loads(self._retired_path.read_text())
            out = doc["releases"]
            if not isinstance(out, dict):
                raise ValueError("'releases' is not an object")
            return out
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise EnvironmentError_(f"{self._retired_path}: cannot read the list of retired releases: {e}",
                                    hint="restore it from a backup of the data directory") from e

    def _retire(self, reasons: dict[str, str], now: dt.datetime) -> None:
        """Record releases leaving the signed set — *before* the commit that drops them, so a version
        is never published twice even if that commit fails (a retired but still signed release is simply
        dropped again by the next change)."""
        if not reasons:
            return
        doc = self.retired()
        for version, reason in reasons.items():
            doc.setdefault(version, {"at": contract.iso_z(now), "reason": reason})
        atomic_write(self._retired_path, json.dumps({"format": 1, "releases": doc}, indent=1,
                                                    sort_keys=True).encode(), mode=0o600)

    def _gc(self, now: dt.datetime, *, chunks: bool = False) -> None:
        """Delete old metadata versions and unreferenced target files. Call with the lock held.

        The chunk store is swept when a release's files went in this call, or with ``chunks`` (at start:
        a publish killed half-way may have left chunks no index names)."""
        state = self.load()
        current = {"targets": state.top.signed.version, "snapshot": state.snapshot.signed.version}
        current |= {name: md.signed.version for name, md in state.roles.items()}
        signed = {q.version for tf in state.targets.signed.targets.values() if (q := _quantix(tf))}
        retired = self.retired()
        for p in self.metadata_dir.iterdir():
            m = re.fullmatch(r"(\d+)\.(targets|snapshot|release-[^/]+)\.json", p.name)
            if not m:
                continue
            if m.group(2) in current:
                if int(m.group(1)) <= current[m.group(2)] - KEEP_METADATA_VERSIONS:
                    p.unlink(missing_ok=True)
                continue
            # A role no longer signed: its files go with its release's files (a host may be mid-refresh).
            r = retired.get(role_version(m.group(2)) or "")
            if r is None or now - dt.datetime.strptime(r["at"], "%Y-%m-%dT%H:%M:%SZ").replace(
                    tzinfo=dt.timezone.utc) >= RETIRED_FILES_GRACE:
                p.unlink(missing_ok=True)
        if not self.targets_dir.is_dir():
            return
        for d in self.targets_dir.iterdir():
            if d.name in signed or d.name == chunkstore.STORE_DIR:
                continue
            r = retired.get(d.name)
            # Not named by the signed metadata and never retired: left by a publish that failed or was
            # killed before its timestamp — unsigned, so it must not stay downloadable.
            if r is None or now - dt.datetime.strptime(r["at"], "%Y-%m-%dT%H:%M:%SZ").replace(
                    tzinfo=dt.timezone.utc) >= RETIRED_FILES_GRACE:
                if d.is_dir():
                    shutil.rmtree(d, ignore_errors=True)
                else:
                    d.unlink(missing_ok=True)
                chunks = True
        # Chunks are shared between releases: one goes only when no index left under targets/ names it
        # (a signed release's, or a retired one's still within its grace).
        if chunks:
            chunkstore.gc(self.targets_dir, chunkstore.referenced(sorted(self.targets_dir.glob("*/*.chunks.json"))))

    # ---- releases -------------------------------------------------------------------------------

    def releases(self) -> list[dict[str, Any]]:
        """One entry per version (newest first), from the signed targets metadata."""
        state = self.load()
        out: dict[str, dict[str, Any]] = {}
        for path, tf in state.targets.signed.targets.items():
            q = _quantix(tf)
            if q is None:
                continue
            fields = {k: v for k, v in q.to_custom().items() if k != "artifact"}
            entry = out.setdefault(q.version, {"targets": {}})
            if q.artifact in contract.ARTIFACTS:  # a chunk index's target carries no notes or command line
                entry.update(fields)
            entry["targets"][q.artifact] = {"path": path, "length": tf.length, "sha256": tf.hashes["sha256"]}
        return sorted(out.values(), key=lambda r: version_key(r["version"]), reverse=True)

    def publish(self, rel: Release, *, channel: str, notes: str = "", now: dt.datetime | None = None,
                move: bool = False) -> None:
        """Add a verified release; ``move=True`` moves its files out of a staging directory (else copies)."""
        contract.check_channel(channel)
        contract.check_notes(notes)
        now = now or utcnow()
        with self.locked():
            state = self.load()
            if any(r["version"] == rel.version for r in self.releases()):
                raise UserError(f"version: {rel.version} is already published",
                                hint="versions are never reused; build a new version")
            if rel.version in self.retired():
                raise UserError(f"version: {rel.version} was published before and has been retired "
                                f"({self.retired()[rel.version]['reason']})",
                                hint="versions are never reused; build a new version")
            targets = state.targets.signed
            # Retention first, so that yanking (or a full rollout of a newer release) makes room.
            drop = prune(_by_version(targets), now)
            remaining = len(_by_version(targets)) - len(drop)
            if remaining + 1 > contract.MAX_SIGNED_RELEASES:
                raise UserError(
                    f"version: {rel.version} cannot be published: {remaining} releases are signed and every "
                    f"host downloads all of them; the limit is {contract.MAX_SIGNED_RELEASES}",
                    hint="remove releases no host needs (qx-release remove VERSION), yank them, or roll a newer "
                         "release out to 100% so older ones are superseded")
            for path in [p for p, tf in targets.targets.items() if (q := _quantix(tf)) and q.version in drop]:
                del targets.targets[path]
            vdir = self.targets_dir / rel.version
            written: list[Path] = []
            try:
                vdir.mkdir(parents=True, exist_ok=True)
                for art in (rel.root, rel.uki):
                    path = contract.target_path(rel.version, art.artifact)
                    # What a host fetches: <targets>/<dir>/<sha256>.<basename of the target path>.
                    dest = vdir / f"{art.sha256}.{path.rpartition('/')[2]}"
                    if dest.name != f"{art.sha256}.{art.name}":
                        raise InternalError(f"{art.name}: not the file name of target {path}")
                    custom = contract.quantix_custom(
                        version=rel.version, artifact=art.artifact, channels=contract.channels_up_to(channel),
                        security_epoch=rel.security_epoch, slot_size=rel.slot_size, slot_sha256=rel.slot_sha256,
                        kernel_cmdline=rel.kernel_cmdline, rollout_start=now, notes=notes)
                    # Staged outside the served tree (same filesystem, so the rename is atomic): a file
                    # being copied is never downloadable under targets/, not even by a guessed name.
                    tmp_dir = self.data_dir / ".publishing"
                    tmp_dir.mkdir(exist_ok=True)
                    tmp = tmp_dir / f"{art.name}.tmp-{os.getpid()}"
                    written.append(tmp)
                    if move and art.path.stat().st_dev == vdir.stat().st_dev:
                        os.replace(art.path, tmp)
                    else:
                        shutil.copyfile(art.path, tmp)
                    with tmp.open("rb+") as f:
                        os.fsync(f.fileno())
                    # Verified again where it will be served from: what we sign is what is on disk.
                    if tmp.stat().st_size != art.size or sha256_file(tmp) != art.sha256:
                        raise InternalError(f"{art.name}: changed while being moved into the repository")
                    written.append(dest)
                    os.replace(tmp, dest)
                    targets.targets[path] = TargetFile(art.size, {"sha256": art.sha256}, path,
                                                       {"custom": {"quantix": custom}})
                    # Its chunk index (docs/update-format.md §5): chunks into the shared store, the index a
                    # target of this release's role, so hosts verify every chunk against signed data.
                    kind = contract.INDEX_OF[art.artifact]
                    index = chunkstore.build_index(
                        dest, compressed=art.artifact == "root", version=rel.version, artifact=art.artifact,
                        length=rel.slot_size if art.artifact == "root" else art.size,
                        sha256=rel.slot_sha256 if art.artifact == "root" else art.sha256,
                        targets_dir=self.targets_dir, staging=self.data_dir / ".publishing", written=written)
                    data = index.to_json()
                    ipath = contract.target_path(rel.version, kind)
                    idigest = hashlib.sha256(data).hexdigest()
                    idest = vdir / f"{idigest}.{ipath.rpartition('/')[2]}"
                    written.append(idest)
                    atomic_write(idest, data)
                    # The release's fields but without notes and command line: every host that reads the
                    # role downloads them, and they are the artifacts' (a role stays within its budget).
                    icustom = contract.quantix_custom(
                        version=rel.version, artifact=kind, channels=contract.channels_up_to(channel),
                        security_epoch=rel.security_epoch, slot_size=rel.slot_size, slot_sha256=rel.slot_sha256,
                        kernel_cmdline="", rollout_start=now, notes="")
                    targets.targets[ipath] = TargetFile(len(data), {"sha256": idigest}, ipath,
                                                        {"custom": {"quantix": icustom}})
                fsync_dir(vdir)
                crashpoint("artifacts")
                self._retire(drop, now)
                self._commit(state, targets=targets, now=now)
            except BaseException:
                # Nothing unsigned stays downloadable: the files moved in for this publish go again.
                for f in written:
                    f.unlink(missing_ok=True)
                for d in [vdir, *{f.parent for f in written if f.parent != vdir}, self.targets_dir / chunkstore.STORE_DIR]:
                    try:
                        d.rmdir()  # only if empty: chunk directories other releases use stay
                    except OSError:
                        pass
                raise
            self._gc(now)

    def remove(self, version: str, *, now: dt.datetime | None = None) -> dict[str, Any]:
        """Take ``version`` out of the signed targets (a new targets version without it); retire it.

        Hosts stop seeing it at their next refresh; its files are deleted after RETIRED_FILES_GRACE.
        The version can never be published again.
        """
        now = now or utcnow()
        with self.locked():
            state = self.load()
            targets = state.targets.signed
            paths = [p for p, tf in targets.targets.items() if (q := _quantix(tf)) and q.version == version]
            if not paths:
                if version in self.retired():
                    raise UserError(f"version: {version} was already removed from the signed targets",
                                    hint="see qx-release list")
                raise NotFound(f"version: {version} is not published", field="version", hint="see qx-release list")
            for p in paths:
                del targets.targets[p]
            self._retire({version: "removed"}, now)
            self._commit(state, targets=targets, now=now)
            self._gc(now)
            return {"version": version, "removed": True, "retired": self.retired()[version]}

    def _change(self, version: str, fn: Any, now: dt.datetime | None) -> dict[str, Any]:
        now = now or utcnow()
        with self.locked():
            state = self.load()
            targets = state.targets.signed
            hits = [(tf, q) for tf in targets.targets.values() if (q := _quantix(tf)) and q.version == version]
            if not hits:
                raise NotFound(f"version: {version} is not published", field="version", hint="see qx-release list")
            for tf, q in hits:
                tf.unrecognized_fields["custom"] = {**tf.custom, "quantix": fn(q, now).to_custom()}
            self._commit(state, targets=targets, now=now)
            return next(r for r in self.releases() if r["version"] == version)

    def promote(self, version: str, *, to: str, now: dt.datetime | None = None) -> dict[str, Any]:
        contract.check_channel(to, "to")

        def fn(q: ReleaseTarget, _now: dt.datetime) -> ReleaseTarget:
            if q.yanked:
                raise UserError(f"version: {version} is yanked and cannot be promoted", hint="publish a new version")
            return replace(q, channels=tuple(contract.merge_channels(list(q.channels), to)))
        return self._change(version, fn, now)

    def yank(self, version: str, *, now: dt.datetime | None = None) -> dict[str, Any]:
        def fn(q: ReleaseTarget, _now: dt.datetime) -> ReleaseTarget:
            return replace(q, yanked=True, channels=())
        return self._change(version, fn, now)

    def rollout(self, version: str, *, percent: float | None = None, paused: bool | None = None,
                now: dt.datetime | None = None) -> dict[str, Any]:
        if percent is not None and not 0 <= percent <= 100:
            raise UserError(f"percent: {percent} must be between 0 and 100")
        if percent is None and paused is None:
            raise UserError("rollout: give --percent N or --pause")

        def fn(q: ReleaseTarget, _now: dt.datetime) -> ReleaseTarget:
            if q.yanked:
                raise UserError(f"version: {version} is yanked; its rollout cannot change")
            r = q.rollout
            if percent is not None:
                r = replace(r, fraction=round(percent / 100, 6), paused=False if paused is None else paused)
            if paused is not None:
                r = replace(r, paused=paused)
            return replace(q, rollout=r)
        return self._change(version, fn, now)


def _online_keys_for(root: Root, online_keys_dir: Path, root_keyids: set[str]) -> dict[str, CryptoSigner]:
    """The private keys in ``online_keys_dir`` (any file name) that ``root``'s online roles name; at least
    each role's threshold. A root key (``root_keyids``) among the files is refused: it never goes to the server."""
    found: dict[str, CryptoSigner] = {}
    for pem in sorted(online_keys_dir.glob("*.pem")) if online_keys_dir.is_dir() else []:
        try:  # by content: whatever the file is called, a root key is refused
            signer = CryptoSigner(load_pem_private_key(pem.read_bytes(), None))
        except (OSError, ValueError, TypeError) as e:
            raise UserError(f"--online-keys: {pem} is not an unencrypted private key ({e})",
                            hint="give the online-keys/ directory that qx-release keys init --offline wrote") from e
        if signer.public_key.keyid in root_keyids:
            raise UserError(f"--online-keys: {pem} is a root private key; root keys never go to the server",
                            hint="pass the offline directory's online-keys/ only; keep root-keys/ offline")
        found[signer.public_key.keyid] = signer
    for role in ONLINE_ROLES:
        have = [k for k in root.roles[role].keyids if k in found]
        if len(have) < root.roles[role].threshold:
            raise UserError(f"--online-keys: {online_keys_dir} holds {len(have)} of the {role} keys the root "
                            f"names ({root.roles[role].threshold} needed)",
                            hint="give the online-keys/ directory of the same offline directory as --root")
    named = {k for role in ONLINE_ROLES for k in root.roles[role].keyids}
    return {k: s for k, s in found.items() if k in named}


# ---- the retention rule ---------------------------------------------------------------------------

def _quantix(tf: TargetFile) -> ReleaseTarget | None:
    """The release fields of a target this server signed, read through the contract's model (None for a
    target that carries none). The server wrote them through the same model, so a ContractError here
    means the repository on disk was changed behind its back: a bug or tampering, not bad input."""
    q = quantix_of(tf.custom)
    if q is None:
        return None
    try:
        return ReleaseTarget.from_custom(q)
    except ContractError as e:
        raise InternalError(f"target {tf.path}: its signed custom.quantix breaks the contract: {e}") from e


def _stale(md: Metadata[Targets], keyids: set[str], now: dt.datetime) -> bool:
    """Must be signed again: not signed by exactly ``keyids`` (a rotation), or expiring within RENEW."""
    return set(md.signatures) != keyids or md.signed.expires - now < RENEW["targets"]


def _same(a: Targets, b: Targets) -> bool:
    """The same signed content, version and expiry aside."""
    da, db = a.to_dict(), b.to_dict()
    return all(da.get(k) == db.get(k) for k in ("targets", "delegations"))


def old_client_targets(flat: Targets) -> dict[str, TargetFile]:
    """What the top-level targets lists itself, for clients that read no delegated role (qx-update
    before delegations): the newest release on each channel, so such a host can still reach a release
    whose qx-update walks the delegations. At most len(CHANNELS) releases: the top-level stays small."""
    newest: dict[str, str] = {}
    for q in _by_version(flat).values():
        for ch in q.channels:
            if not q.yanked and (ch not in newest or version_key(q.version) > version_key(newest[ch])):
                newest[ch] = q.version
    keep = set(newest.values())
    # Only the artifacts: such a host reads no chunk index, and the top-level role stays small.
    return {p: tf for p, tf in flat.targets.items()
            if (q := _quantix(tf)) and q.version in keep and q.artifact in contract.ARTIFACTS}


def _by_version(targets: Targets) -> dict[str, ReleaseTarget]:
    """version -> its release fields (root and UKI carry the same ones)."""
    out: dict[str, ReleaseTarget] = {}
    for tf in targets.targets.values():
        q = _quantix(tf)
        if q is not None and q.artifact in contract.ARTIFACTS:
            out.setdefault(q.version, q)
    return out


def supersedes(newer: ReleaseTarget, q: ReleaseTarget, now: dt.datetime) -> bool:
    """True when no host could ever choose ``q`` while ``newer`` is signed (docs/update-format.md §3).

    Wherever ``q`` is a candidate, ``newer`` is one too and wins (the newest candidate wins): it is
    newer, not yanked, on every channel ``q`` is on, fully rolled out (fraction 1, started, not
    paused, so every host is eligible), not below ``q``'s security epoch, and fits every slot ``q`` fits.
    """
    ro = newer.rollout
    started = ro.start_time()
    return (not newer.yanked
            and version_key(newer.version) > version_key(q.version)
            and set(q.channels) <= set(newer.channels)
            and ro.fraction >= 1 and not ro.paused
            and (started is None or started <= now)
            and newer.security_epoch >= q.security_epoch
            and newer.slot_size <= q.slot_size)


def prune(releases: dict[str, ReleaseTarget], now: dt.datetime) -> dict[str, str]:
    """The retention rule: version -> reason for each release that leaves the signed set at a publish.

    Yanked releases leave (hosts skip them anyway; the yank itself stays signed until the next
    publish). Superseded releases (:func:`supersedes`) leave, except the newest KEEP_SUPERSEDED, which
    stay for the operator's view of recent history. Everything a host could still choose stays.
    """
    live = [q for q in releases.values() if not q.yanked]
    out: dict[str, str] = {}
    kept = 0
    for version in sorted(releases, key=version_key, reverse=True):
        q = releases[version]
        if q.yanked:
            out[version] = "yanked"
        elif any(supersedes(n, q, now) for n in live):
            if kept < contract.KEEP_SUPERSEDED:
                kept += 1
            else:
                out[version] = "superseded"
    return out
