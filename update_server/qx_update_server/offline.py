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


def verify_directory(directory: Path, trusted_root: bytes) -> list[str]:
    """Refresh and download every target from ``directory``; return the verified target paths."""
    with tempfile.TemporaryDirectory() as work:
        md = Path(work) / "metadata"
        md.mkdir()
        try:
            updater = Updater(str(md), f"{_BASE}metadata/", str(Path(work)), f"{_BASE}targets/",
                              fetcher=DirectoryFetcher(directory), bootstrap=trusted_root)
            updater.refresh()
            paths = list(json.loads((md / "targets.json").read_bytes())["signed"]["targets"])
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
