"""Verify a repository directory (an export, a USB stick) with python-tuf's ngclient, without a network.

ngclient fetches through a :class:`FetcherInterface`; :class:`DirectoryFetcher` maps its URLs onto the
files of the directory, so the very same client code a host runs checks every signature, version,
expiry and hash of the copy.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tuf.api.exceptions import DownloadHTTPError
from tuf.ngclient import FetcherInterface, Updater

from qx_common.errors import ExternalError

_BASE = "file-repo://repo/"


class DirectoryFetcher(FetcherInterface):
    def __init__(self, directory: Path) -> None:
        self.directory = directory.resolve()

    def _fetch(self, url: str) -> Iterator[bytes]:
        rel = url.removeprefix(_BASE)
        path = (self.directory / rel).resolve()
        if not path.is_relative_to(self.directory) or not path.is_file():
            raise DownloadHTTPError(f"{rel} not found", 404)
        return _chunks(path)


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            yield chunk


def listed_targets(updater: Updater, metadata_dir: Path) -> list[str]:
    """Every target path of a refreshed repository: the top-level role's and each delegated release role's,
    each role loaded through ngclient's delegation walk (verified against the snapshot and its delegator)."""
    top = json.loads((metadata_dir / "targets.json").read_bytes())["signed"]
    paths = list(top["targets"])
    for name, role in ((r["name"], r) for r in (top.get("delegations") or {}).get("roles", [])):
        for pattern in role.get("paths", []):
            version = pattern.removesuffix("/*")
            # A path only this role could sign makes the walk load and verify it (the top-level role also
            # lists the newest release of each channel, and the walk would stop there); its file lists the rest.
            updater.get_targetinfo(f"{version}/probe")
        local = metadata_dir / f"{name}.json"
        if local.is_file():
            paths.extend(p for p in json.loads(local.read_bytes())["signed"]["targets"] if p not in paths)
    return paths


def verify_directory(directory: Path, trusted_root: bytes) -> list[str]:
    """Refresh and download every target from ``directory``; return the verified target paths."""
    with tempfile.TemporaryDirectory() as work:
        md = Path(work) / "metadata"
        md.mkdir()
        try:
            updater = Updater(str(md), f"{_BASE}metadata/", str(Path(work)), f"{_BASE}targets/",
                              fetcher=DirectoryFetcher(directory), bootstrap=trusted_root)
            updater.refresh()
            paths = listed_targets(updater, md)
            for p in paths:
                info = updater.get_targetinfo(p)
                if info is None:
                    raise ExternalError(f"verify: target {p} vanished during verification")
                updater.download_target(info, str(Path(work) / "t"))
        except ExternalError:
            raise
        except Exception as e:  # python-tuf's own errors: the copy does not verify
            raise ExternalError(f"verify: {directory} does not verify: {type(e).__name__}: {e}") from e
    return paths
