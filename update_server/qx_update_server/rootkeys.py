"""Offline TUF root keys: created and used on an administrator's machine, never on the update server.

``qx-release keys init --offline DIR`` and ``qx-release keys sign-root --offline DIR`` work on a
directory that belongs on offline media::

    DIR/root-keys/<keyid>.pem     root private keys: the secret that stays offline (files 0600, dir 0700)
    DIR/online-keys/<keyid>.pem   the timestamp, snapshot and targets keys: copied to the update server
                                  (``qx-update-server init --online-keys``); may be deleted here afterwards
    DIR/<N>.root.json             every root version signed here (1 = what hosts start from)
    DIR/root.json                 the newest root (the image's trust anchor: make image TUF_ROOT=DIR/root.json)

Invariants:

* ``init`` builds the whole directory under a temporary sibling and renames it into place: DIR either
  does not exist (or is empty) or holds a complete, self-signed version 1 — so a second ``init`` on the
  same DIR is refused and never overwrites keys, and a crashed one leaves nothing half-made.
* ``sign_root`` writes ``N+1.root.json`` only after checking it the way a TUF client will: signed by a
  threshold of root N's root keys *and* a threshold of its own (TUF's rule for a root rotation).
  ``root.json`` is replaced last. The server checks the same again before it serves the new root
  (:meth:`qx_update_server.repository.Repository.accept_root`).
* Root keys held by different people: ``sign_root(partial=True)`` writes what it could sign as a
  draft, ``DIR/next.root.json``; each other holder runs :func:`cosign` on a copy of the draft with their
  own offline directory (which holds the root versions and their key). A draft becomes ``N+1.root.json``
  in the directory where both thresholds are first met; until then it is never a root version.

Only python-tuf's public Metadata API (``tuf.api.metadata``) and securesystemslib's ``CryptoSigner``.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import re
import shutil
from dataclasses import dataclass
from glob import escape as glob_escape
from pathlib import Path

from securesystemslib.signer import CryptoSigner
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import Key, Metadata, Root

from qx_common.errors import EnvironmentError_, UserError
from qx_common.fs import atomic_write
from qx_update_server.keys import KeyDir

ONLINE_ROLES = ("targets", "snapshot", "timestamp")
DRAFT = "next.root.json"
ROOT_LIFETIME_DAYS = 365
MAX_KEYS = 16


@dataclass(frozen=True)
class OfflineDir:
    """The paths of an offline key directory (see the module docstring)."""

    path: Path

    @property
    def root_keys(self) -> KeyDir:
        return KeyDir(self.path / "root-keys")

    @property
    def online_keys(self) -> KeyDir:
        return KeyDir(self.path / "online-keys")

    @property
    def root_json(self) -> Path:
        return self.path / "root.json"

    def versions(self) -> list[int]:
        out = []
        for p in self.path.glob("*.root.json"):
            m = re.fullmatch(r"(\d+)\.root\.json", p.name)
            if m:
                out.append(int(m.group(1)))
        return sorted(out)

    def root_file(self, version: int) -> Path:
        return self.path / f"{version}.root.json"

    def newest(self) -> Metadata[Root]:
        """The newest root signed here; a UserError naming DIR when there is none."""
        versions = self.versions()
        if not versions:
            raise UserError(f"--offline {self.path}: holds no N.root.json",
                            hint="create the offline keys first: qx-release keys init --offline DIR")
        return read_root(self.root_file(versions[-1]))


def read_root(path: Path, flag: str = "--offline") -> Metadata[Root]:
    """Root metadata from ``path``; a UserError naming the file for anything else."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"{flag}: cannot read {path}: {e.strerror or e}") from e
    return parse_root(data, f"{flag}: {path}")


def parse_root(data: bytes, what: str) -> Metadata[Root]:
    try:
        md = Metadata.from_bytes(data)
    except Exception as e:  # noqa: BLE001 - python-tuf's DeserializationError and what it wraps
        raise UserError(f"{what}: not TUF metadata ({_cause(e)})",
                        hint="give the root.json that qx-release keys init/sign-root wrote") from e
    if not isinstance(md.signed, Root):
        raise UserError(f"{what}: is {md.signed.type} metadata, not root",
                        hint="give the root.json that qx-release keys init/sign-root wrote")
    if isinstance(md.signed.version, bool):  # JSON true passes python-tuf's int check
        raise UserError(f"{what}: version is {json.dumps(md.signed.version)}, not a number",
                        hint="give the root.json that qx-release keys init/sign-root wrote")
    try:
        # What is signed is the canonical JSON of "signed": a value canonical JSON cannot hold (a float,
        # a lone surrogate in any field, known or not) cannot carry a signature. Found here, not as a
        # SerializationError in the middle of the signature check.
        md.signed_bytes
    except Exception as e:  # noqa: BLE001 - tuf's SerializationError and what it wraps
        raise UserError(f"{what}: \"signed\" cannot be written as canonical JSON "
                        f"({_cause(e)}): it holds a number that is not an integer or text that is not Unicode",
                        hint="give the root.json that qx-release keys init/sign-root wrote") from e
    check_distinct_keys(md.signed, what)
    return md


def _cause(e: BaseException) -> str:
    """python-tuf's (De)SerializationError says only "Failed to deserialize JSON": the reason is its cause."""
    inner = e.__cause__ or e.__context__ or e
    return f"{type(inner).__name__}: {inner}"[:300]


def _key_material(key: Key) -> tuple[str, str, str]:
    """A key's identity by content: public keys are hex or PEM text, so case and whitespace are ignored."""
    val = {k: re.sub(r"\s+", "", v).lower() if isinstance(v, str) else v for k, v in key.keyval.items()}
    return key.keytype, key.scheme, json.dumps(val, sort_keys=True)


def check_distinct_keys(root: Root, what: str) -> None:
    """Refuse one public key listed under two keyids: each keyid counts as one signature toward a
    threshold, so a copy of one signature under the second keyid would meet "2 of N" with one key."""
    seen: dict[tuple[str, str, str], str] = {}
    for keyid, key in root.keys.items():
        other = seen.setdefault(_key_material(key), keyid)
        if other != keyid:
            raise UserError(f"{what}: keys {other} and {keyid} are the same public key under two keyids "
                            f"(one key would count twice toward a threshold)",
                            hint="list each key once, under its own keyid (qx-release keys sign-root does)")


def check_counts(root_keys: int, threshold: int) -> None:
    if not 1 <= root_keys <= MAX_KEYS:
        raise UserError(f"--root-keys: {root_keys} must be from 1 to {MAX_KEYS}", hint="e.g. --root-keys 3")
    if not 1 <= threshold <= root_keys:
        raise UserError(f"--threshold: {threshold} must be from 1 to the number of root keys ({root_keys})",
                        hint=f"e.g. --root-keys {max(root_keys, 3)} --threshold 2")


def verify_rotation(old: Root, new: Metadata[Root], what: str) -> None:
    """TUF's rule for root N+1: its version follows, a threshold of N's root keys and of its own signed it."""
    if new.signed.version != old.version + 1:
        raise UserError(f"{what}: is root version {new.signed.version}, the current root is version {old.version}",
                        hint=f"sign version {old.version + 1} (qx-release keys sign-root on the newest root)")
    root_keyids = set(new.signed.roles[Root.type].keyids)
    for role in ONLINE_ROLES:
        shared = sorted(root_keyids & set(new.signed.roles[role].keyids))
        if shared:
            # The server holds every online key: one that is also a root key would put a root private key
            # on the server (which then refuses to start, rightly) — never a root a client should get.
            raise UserError(f"{what}: key {shared[0]} is both a root key and a {role} key in root version "
                            f"{new.signed.version}; the update server holds the {role} key, so it would hold a "
                            f"root key", hint="root keys and online keys must be different keys (qx-release keys "
                                              "sign-root keeps them apart)")
    for who, root in (("the current root's", old), ("its own", new.signed)):
        try:
            root.verify_delegate(Root.type, new.signed_bytes, new.signatures)
        except UnsignedMetadataError as e:
            raise UserError(
                f"{what}: root version {new.signed.version} is not signed by a threshold of {who} root keys "
                f"({root.roles[Root.type].threshold} needed: {e})",
                hint="sign it with enough root keys: qx-release keys sign-root --offline DIR with the "
                     "current root keys in DIR/root-keys") from e


def init(directory: Path, *, root_keys: int = 1, threshold: int = 1, online_keys: int = 1,
         now: dt.datetime | None = None) -> Metadata[Root]:
    """Create root and online keys and root version 1 in ``directory`` (new or empty); return the root."""
    check_counts(root_keys, threshold)
    if not 1 <= online_keys <= MAX_KEYS:
        raise UserError(f"--online-keys: {online_keys} must be from 1 to {MAX_KEYS}")
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise UserError(f"--offline {directory}: already exists and is not an empty directory",
                        hint="keys are never overwritten: give a new directory (sign-root makes new root versions)")
    if directory.is_dir() and os.path.ismount(directory):
        # The directory is built beside DIR and renamed into place: beside a mount point is another
        # filesystem (the machine's own disk, not the stick), where no root private key may be written.
        raise UserError(f"--offline {directory}: is a mount point; the keys are made in a new directory on "
                        "that filesystem",
                        hint=f"give a directory inside it, e.g. --offline {directory / 'quantix-keys'}")
    _remove_dead_inits(directory)
    now = (now or dt.datetime.now(dt.timezone.utc)).replace(microsecond=0)
    tmp = directory.with_name(f".{directory.name}.init-{os.getpid()}")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True, mode=0o700)
        od = OfflineDir(tmp)
        root = Root(expires=now + dt.timedelta(days=ROOT_LIFETIME_DAYS), consistent_snapshot=True)
        signers = [od.root_keys.generate() for _ in range(root_keys)]
        for s in signers:
            root.add_key(s.public_key, Root.type)
        root.roles[Root.type].threshold = threshold
        # One key per online role by default; the roles' threshold stays 1 (the server signs alone).
        for role in ONLINE_ROLES:
            for _ in range(online_keys):
                root.add_key(od.online_keys.generate().public_key, role)
        md = Metadata(root)
        for i, s in enumerate(signers):
            md.sign(s, append=i > 0)
        data = md.to_bytes()
        atomic_write(od.root_file(1), data)
        atomic_write(od.root_json, data)
        if directory.exists():
            directory.rmdir()  # empty (checked above); the rename below needs it gone
        os.rename(tmp, directory)
    except OSError as e:
        raise EnvironmentError_(f"--offline {directory}: cannot write the keys: {e.strerror or e}",
                                hint="choose a directory this user can write") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return md


def _remove_dead_inits(directory: Path) -> None:
    """Remove what an init of the same DIR killed before its rename left (``.DIR.init-<pid>``, its process
    gone): root private keys no root ever named, which would otherwise stay on the medium unnoticed."""
    for tmp in directory.parent.glob(f".{glob_escape(directory.name)}.init-*"):
        pid = tmp.name.rsplit("-", 1)[1]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # that init is still running
        except ProcessLookupError:
            pass
        except (PermissionError, OverflowError):
            continue  # someone else's process, or no such pid at all: leave it
        shutil.rmtree(tmp, ignore_errors=True)


def sign_root(directory: Path, *, new_root_keys: int | None = None, threshold: int | None = None,
              new_online_keys: bool = False, expires_days: int = ROOT_LIFETIME_DAYS, partial: bool = False,
              now: dt.datetime | None = None) -> Metadata[Root]:
    """Sign root version N+1 in ``directory``: a new expiry, and with ``new_root_keys`` new root keys.

    Signed by every current root key found in ``DIR/root-keys`` (at least the threshold) and by the
    new root keys. The online keys stay unless ``new_online_keys``: then one new key per online role is
    written to ``DIR/online-keys`` (the server must get them, ``qx-update-server keys add-online``,
    before the root is pushed: it serves only a root whose online keys it holds).
    """
    if not 1 <= expires_days <= 3650:
        raise UserError(f"--expires-days: {expires_days} must be from 1 to 3650", hint="e.g. --expires-days 365")
    od = OfflineDir(directory)
    current = od.newest()
    old = current.signed
    old_role = old.roles[Root.type]
    old_signers = od.root_keys.signers(old_role.keyids)
    if len(old_signers) < old_role.threshold and not partial:
        raise UserError(
            f"--offline {directory}: root version {old.version} needs {old_role.threshold} of its root keys to sign "
            f"version {old.version + 1}; {len(old_signers)} found in {od.root_keys.path}",
            hint="bring the other root key files (named <keyid>.pem) into that directory, or sign with --partial "
                 "and let the other key holders cosign; nothing was written")
    now = (now or dt.datetime.now(dt.timezone.utc)).replace(microsecond=0)
    new = Root.from_dict(copy.deepcopy(old.to_dict()))  # to_dict shares lists with the object
    new.version = old.version + 1
    new.expires = now + dt.timedelta(days=expires_days)
    signers: dict[str, CryptoSigner] = {s.public_key.keyid: s for s in old_signers}
    if new_root_keys is not None:
        check_counts(new_root_keys, threshold if threshold is not None else old_role.threshold)
        for keyid in list(new.roles[Root.type].keyids):
            new.revoke_key(keyid, Root.type)
        for _ in range(new_root_keys):
            s = od.root_keys.generate()  # written before the root that names it: a crash leaves a spare file
            new.add_key(s.public_key, Root.type)
            signers[s.public_key.keyid] = s
        new.roles[Root.type].threshold = threshold if threshold is not None else old_role.threshold
    elif threshold is not None:
        check_counts(len(new.roles[Root.type].keyids), threshold)
        new.roles[Root.type].threshold = threshold
    if new_online_keys:
        for role in ONLINE_ROLES:
            for keyid in list(new.roles[role].keyids):
                new.revoke_key(keyid, role)
            new.add_key(od.online_keys.generate().public_key, role)
    md = Metadata(new)
    for i, s in enumerate(signers.values()):
        md.sign(s, append=i > 0)
    if partial and missing(old, md):
        atomic_write(od.path / DRAFT, md.to_bytes())  # a draft: not a root version until both thresholds hold
        return md
    verify_rotation(old, md, f"--offline {directory}")
    data = md.to_bytes()
    atomic_write(od.root_file(new.version), data)
    atomic_write(od.root_json, data)
    (od.path / DRAFT).unlink(missing_ok=True)
    return md


def missing(old: Root, md: Metadata[Root]) -> dict[str, int]:
    """Signatures a root N+1 still lacks: {"current": n, "new": m}, only the non-zero ones."""
    out = {"current": old.get_verification_result(Root.type, md.signed_bytes, md.signatures).missing,
           "new": md.signed.get_verification_result(Root.type, md.signed_bytes, md.signatures).missing}
    return {k: v for k, v in out.items() if v}


def cosign(directory: Path, draft: Path) -> Metadata[Root]:
    """Add the signatures of this holder's root keys (``DIR/root-keys``) to a draft root N+1.

    The draft must follow the newest root in ``directory``. Written back to ``draft`` while signatures
    are missing; once both thresholds hold it becomes ``DIR/N+1.root.json`` and ``DIR/root.json`` (and
    a draft inside DIR is removed). Signs only for keys the current or the new root names.
    """
    od = OfflineDir(directory)
    old = od.newest().signed
    md = read_root(draft, "--cosign")
    if md.signed.version != old.version + 1:
        raise UserError(f"--cosign {draft}: is root version {md.signed.version}; {directory} holds version {old.version}",
                        hint="cosign with the offline directory of the same repository, at the version before")
    keyids = set(old.roles[Root.type].keyids) | set(md.signed.roles[Root.type].keyids)
    signers = od.root_keys.signers(sorted(keyids))
    if not signers:
        raise UserError(f"--offline {directory}: holds none of the root keys root version {old.version} or "
                        f"{md.signed.version} names", hint=f"run cosign where such a key is ({od.root_keys.path})")
    for s in signers:
        md.sign(s, append=True)
    if missing(old, md):
        atomic_write(draft, md.to_bytes())
        return md
    verify_rotation(old, md, f"--cosign {draft}")
    data = md.to_bytes()
    atomic_write(od.root_file(md.signed.version), data)
    atomic_write(od.root_json, data)
    (od.path / DRAFT).unlink(missing_ok=True)
    if draft.resolve() != (od.path / DRAFT).resolve():
        draft.unlink(missing_ok=True)  # complete now: only DIR/N+1.root.json is the signed root
    return md
