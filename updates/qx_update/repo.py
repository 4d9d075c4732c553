"""The signed repository, through python-tuf's ngclient: refresh, list Quantix releases, target URLs.

Call order: :func:`open_repo` (bootstrap from the trusted root shipped in the image; the metadata cache
in ``<state_dir>/metadata`` keeps the newest verified root, so root rotation is followed and never
undone) → :meth:`Repo.refresh` (root → timestamp → snapshot → targets with every TUF check: signatures
and thresholds, expiry, version rollback, snapshot consistency, length limits) → :meth:`Repo.targets`.

Delegated targets (docs/update-format.md §2.1): the top-level targets role delegates each release to its
own role, ``release-<version>``, for the paths ``<version>/*``. :meth:`Repo.targets` lists the versions
from the delegations and asks ngclient for the root target of each version newer than the running one
(``Updater.get_targetinfo``: its delegation walk downloads and verifies that release's role, or takes it
from the metadata cache when the snapshot says it has not changed). So a check downloads the top-level
targets when it changed, and only the roles of releases this host could move to — never older ones.

The same code serves online and offline updates: ``--from`` gives a directory (or a tarball unpacked
into the state dir) with the repository's ``metadata/`` and ``targets/``, read by :class:`DirFetcher`
through the same ngclient checks and the same metadata cache (an offline copy cannot roll a host back).
"""

from __future__ import annotations

import shutil
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from tuf.api import exceptions as tufx
from tuf.api.metadata import Metadata, Root, TargetFile, Targets
from tuf.ngclient import FetcherInterface, Updater, UpdaterConfig

from qx_common.errors import EnvironmentError_, ExternalError, UserError
from qx_common.version import is_valid_version, version_key
from qx_update.deadline import DEFAULT_DEADLINE, METADATA_DEADLINE, DeadlineFetcher
from qx_update.errors import VerificationError

USER_AGENT = "qx-update"
RELEASE_ROLE_PREFIX = "release-"


def release_role(version: str) -> str:
    """The delegated targets role that signs ``version``'s targets (paths ``<version>/*``)."""
    return RELEASE_ROLE_PREFIX + version


def role_version(name: str) -> str | None:
    """The version a release role signs, or None for a role that is not a release role."""
    version = name.removeprefix(RELEASE_ROLE_PREFIX)
    return version if name.startswith(RELEASE_ROLE_PREFIX) and is_valid_version(version) else None


def root_target_path(version: str) -> str:
    """The root payload's target path (docs/update-format.md §2)."""
    return f"{version}/quantix-os_{version}.root.erofs.zst"


class DirFetcher(FetcherInterface):
    """ngclient fetcher for ``file://`` URLs (an offline copy of the repository)."""

    def _fetch(self, url: str) -> Iterator[bytes]:
        path = Path(unquote(urlparse(url).path))
        try:
            f = path.open("rb")
        except FileNotFoundError as e:
            raise tufx.DownloadHTTPError(f"{path}: not in the offline repository", 404) from e

        def chunks() -> Iterator[bytes]:
            with f:
                while block := f.read(1024 * 1024):
                    yield block

        return chunks()


def unpack_offline(source: Path, scratch: Path) -> Path:
    """An offline source as a directory: a directory as is, a tarball unpacked (safely) into ``scratch``."""
    if source.is_dir():
        base = source
    elif source.is_file():
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        try:
            with tarfile.open(source) as tar:
                tar.extractall(scratch, filter="data")  # no absolute paths, links out, devices
        except (tarfile.TarError, OSError) as e:
            raise UserError(f"--from {source}: not a readable tarball: {e}",
                            hint="give the repository directory or a .tar/.tar.gz/.tar.zst of it") from e
        base = scratch
    else:
        raise UserError(f"--from {source}: no such file or directory", hint="give the path of the offline repository")
    # Accept the repository at the top or one directory down (a tarball of a folder).
    for cand in [base, *sorted(p for p in base.iterdir() if p.is_dir())]:
        if (cand / "metadata").is_dir() and (cand / "targets").is_dir():
            return cand
    raise UserError(f"--from {source}: no metadata/ and targets/ directories inside",
                    hint="copy the whole signed repository (both directories)")


def describe_tuf_error(e: Exception) -> str:
    """An operator-readable sentence for a TUF refusal, naming the attack it stops."""
    msg = str(e) or type(e).__name__
    if isinstance(e, tufx.ExpiredMetadataError):
        return f"signed metadata has expired (freeze attack or a stale mirror): {msg}"
    if isinstance(e, tufx.BadVersionNumberError):
        return f"metadata version went backwards (rollback attack): {msg}"
    if isinstance(e, tufx.UnsignedMetadataError):
        return f"metadata signature is not valid (bad or missing key): {msg}"
    if isinstance(e, tufx.LengthOrHashMismatchError):
        return f"downloaded data does not match its signed length or hash (tampered or mix-and-match): {msg}"
    if isinstance(e, tufx.DownloadLengthMismatchError):
        return f"the server sent more data than signed (endless-data attack): {msg}"
    return f"{type(e).__name__}: {msg}"


@dataclass
class Repo:
    updater: Updater
    metadata_dir: Path
    target_base_url: str

    def _tuf(self, call: Any, *args: Any) -> Any:
        """Run an ngclient call; its errors become ours (a refusal is a VerificationError)."""
        try:
            return call(*args)
        except tufx.RepositoryError as e:
            raise VerificationError(describe_tuf_error(e)) from e
        except tufx.DownloadLengthMismatchError as e:
            raise VerificationError(describe_tuf_error(e)) from e
        except tufx.DownloadError as e:
            raise ExternalError(f"cannot fetch update metadata: {describe_tuf_error(e)}",
                                hint="check server_url and the network; the installed system is unchanged") from e
        except OSError as e:
            raise EnvironmentError_(f"cannot store update metadata in {self.metadata_dir}: {e.strerror or e}") from e

    def refresh(self) -> float:
        """Refresh the top-level metadata; returns the seconds it took."""
        t0 = time.monotonic()
        self._tuf(self.updater.refresh)
        return time.monotonic() - t0

    def targets(self, newer_than: str | None = None) -> dict[str, TargetFile]:
        """The verified targets a host may choose from: the top-level role's own, and the root target of
        every delegated release newer than ``newer_than`` (all of them when None), through ngclient's
        delegation walk. Call after :meth:`refresh`."""
        # ngclient persists each role only after verifying it; refresh() ran in this process, so the
        # file is exactly the top-level targets metadata the TrustedMetadataSet accepted.
        top = Metadata[Targets].from_file(str(self.metadata_dir / "targets.json")).signed
        out = dict(top.targets)  # a repository signed before delegations; the newest per channel
        delegated = top.delegations.roles or {} if top.delegations else {}
        for name in delegated:
            version = role_version(name)
            if version is None or newer_than is not None and version_key(version) <= version_key(newer_than):
                continue
            path = root_target_path(version)
            if path not in out:
                info = self._tuf(self.updater.get_targetinfo, path)
                if info is not None:
                    out[path] = info
        return out

    def targetinfo(self, path: str) -> TargetFile:
        info = self.find_targetinfo(path)
        if info is None:
            raise VerificationError(f"target {path} is not in the signed targets metadata")
        return info

    def find_targetinfo(self, path: str) -> TargetFile | None:
        """The verified target ``path``, or None when the signed metadata has none (a release's chunk
        index is optional: releases published before delta updates have none)."""
        return self._tuf(self.updater.get_targetinfo, path)  # type: ignore[no-any-return]

    def target_url(self, info: TargetFile) -> str:
        """The download URL, hash-prefixed as ngclient does for ``consistent_snapshot`` repositories."""
        path = info.path
        # The root ngclient verified and persisted (root.json in its metadata directory) says whether.
        if Metadata[Root].from_file(str(self.metadata_dir / "root.json")).signed.consistent_snapshot:
            dirname, sep, basename = path.rpartition("/")
            path = f"{dirname}{sep}{next(iter(info.hashes.values()))}.{basename}"
        return self.target_base_url + path


def open_repo(*, trusted_root: Path, metadata_dir: Path, base_url: str,
              download_deadline: float = DEFAULT_DEADLINE) -> Repo:
    """An ngclient Updater bootstrapped from the image's trusted root (newest cached root preferred).

    Each metadata file must arrive within ``download_deadline`` (at most METADATA_DEADLINE): a server
    trickling bytes is a slow-retrieval attack (:mod:`qx_update.deadline`)."""
    try:
        shipped = trusted_root.read_bytes()
    except FileNotFoundError as e:
        raise EnvironmentError_(
            f"no trusted root: this image was built without an update key ({trusted_root} is missing)",
            hint="updates need an image built with a TUF root; use --config with trusted_root = <file> to test") from e
    metadata_dir.mkdir(parents=True, exist_ok=True)
    # Start from the newest root already verified (root rotation followed earlier must not be undone);
    # ngclient keeps them as root_history/<n>.root.json. The shipped root is used the first time.
    bootstrap = shipped
    history = metadata_dir / "root_history"
    if history.is_dir():
        versions = sorted((int(p.name.split(".")[0]), p) for p in history.glob("*.root.json")
                          if p.name.split(".")[0].isdigit())
        if versions:
            cached = versions[-1][1].read_bytes()
            try:
                if Metadata.from_bytes(cached).signed.version >= Metadata.from_bytes(shipped).signed.version:
                    bootstrap = cached
            except (ValueError, tufx.RepositoryError):
                bootstrap = shipped
    base = base_url.rstrip("/") + "/"
    fetcher: FetcherInterface = DirFetcher() if base.startswith("file://") else DeadlineFetcher(
        min(download_deadline, METADATA_DEADLINE), app_user_agent=USER_AGENT)
    try:
        updater = Updater(str(metadata_dir), base + "metadata/", None, base + "targets/", fetcher=fetcher,
                          config=UpdaterConfig(app_user_agent=USER_AGENT), bootstrap=bootstrap)
    except (tufx.RepositoryError, ValueError) as e:
        raise VerificationError(f"the trusted root {trusted_root} is not valid TUF root metadata: {e}") from e
    return Repo(updater, metadata_dir, base + "targets/")
