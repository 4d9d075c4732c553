"""Where things are: the repository, build outputs and the release's file names (one place)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from qx_common.errors import UserError
from qx_common.version import IMAGE_ID, is_valid_version

REPO = Path(__file__).resolve().parents[2]


def read_version(repo: Path = REPO) -> str:
    text = (repo / "VERSION").read_text().strip()
    if not is_valid_version(text):
        raise UserError(f"VERSION: '{text}' is not MAJOR.MINOR.PATCH[-PRE]", hint="edit the VERSION file")
    return text


def read_mkosi_setting(key: str, repo: Path = REPO) -> str:
    """Read a single-valued setting from mkosi.conf (the one place it is declared)."""
    m = re.search(rf"^{re.escape(key)}=(.*)$", (repo / "mkosi.conf").read_text(), re.MULTILINE)
    if not m:
        raise UserError(f"mkosi.conf: {key}= is missing", hint=f"declare {key}= in mkosi.conf (qx-build reads it)")
    return m.group(1).strip()


@dataclass(frozen=True)
class Release:
    """File names of one release in a build directory."""

    version: str
    build_dir: Path

    def _f(self, suffix: str) -> Path:
        return self.build_dir / f"{IMAGE_ID}_{self.version}{suffix}"

    @property
    def disk(self) -> Path:
        return self._f(".raw")

    @property
    def iso(self) -> Path:
        return self._f(".iso")

    @property
    def root_payload(self) -> Path:
        return self._f(".root.erofs.zst")

    @property
    def uki(self) -> Path:
        return self._f(".efi")

    @property
    def manifest(self) -> Path:
        return self._f(".manifest.json")

    @property
    def sha256sums(self) -> Path:
        return self.build_dir / "SHA256SUMS"

    def files(self) -> list[Path]:
        """Every file of the release, SHA256SUMS last."""
        return [self.disk, self.iso, self.root_payload, self.uki, self.manifest, self.sha256sums]
