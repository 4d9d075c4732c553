"""The product version, from one place.

The source of truth is the repository's ``VERSION`` file. The build stamps it into the Python
package metadata (pyproject's dynamic version) and into ``/usr/lib/os-release`` (``IMAGE_VERSION``).
At run time we prefer os-release, because on a host that is what the booted slot really is.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

PRODUCT_NAME = "Quantix OS"
IMAGE_ID = "quantix-os"

_VERSION_RE = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:[-~]([0-9A-Za-z.]+))?")


def parse_os_release(text: str) -> dict[str, str]:
    """Parse os-release(5) text: KEY=value lines, values optionally quoted."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        out[key.strip()] = value
    return out


def os_release(root: Path = Path("/")) -> dict[str, str]:
    for rel in ("etc/os-release", "usr/lib/os-release"):
        p = root / rel
        try:
            return parse_os_release(p.read_text())
        except OSError:
            continue
    return {}


def is_valid_version(version: str) -> bool:
    return isinstance(version, str) and bool(_VERSION_RE.fullmatch(version))


def version_key(version: str) -> tuple[int, int, int, int, str]:
    """Sort key: a pre-release (``1.2.0-rc1``) sorts before its release (``1.2.0``)."""
    m = _VERSION_RE.fullmatch(version)
    if not m:
        raise ValueError(f"not a version: {version!r} (expected MAJOR.MINOR.PATCH[-PRERELEASE])")
    major, minor, patch, pre = m.groups()
    return (int(major), int(minor), int(patch), 0 if pre else 1, pre or "")


def product_version(root: Path = Path("/")) -> str:
    """The running product version: os-release IMAGE_VERSION on a Quantix host, else package metadata."""
    rel = os_release(root)
    if rel.get("IMAGE_ID") == IMAGE_ID and rel.get("IMAGE_VERSION"):
        return rel["IMAGE_VERSION"]
    try:
        return metadata.version("quantix-os")
    except metadata.PackageNotFoundError:
        return "0.0.0+unknown"
