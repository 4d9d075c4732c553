"""Hashing helpers: sha256 of files (or a prefix of them) in chunks, with optional progress."""

from __future__ import annotations

import hashlib
from pathlib import Path

from qx_common.errors import ExternalError
from qx_common.progress import Progress

CHUNK = 4 * 1024 * 1024


def sha256_file(path: Path, *, limit: int | None = None, label: str | None = None) -> str:
    h = hashlib.sha256()
    remaining = path.stat().st_size if limit is None else limit
    bar = Progress(label, remaining) if label else None
    with path.open("rb") as f:
        while remaining > 0:
            chunk = f.read(min(CHUNK, remaining))
            if not chunk:
                raise ExternalError(f"{path}: ended {remaining} bytes early (truncated by a failed step?)",
                                    hint="run make image again")
            h.update(chunk)
            remaining -= len(chunk)
            if bar:
                bar.update(len(chunk))
    if bar:
        bar.close()
    return h.hexdigest()
