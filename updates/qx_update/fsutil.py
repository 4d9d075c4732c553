"""Crash-safe file writes: every file qx-update owns is replaced whole, never edited in place.

``atomic_write`` writes a temp file in the same directory, fsyncs it, renames it over the target and
fsyncs the directory, so after a power cut the target holds either the old or the new content.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems (vfat on old kernels) refuse fsync on directories; the rename is done
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes | str, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically (temp file + fsync + rename + fsync of the directory)."""
    raw = data.encode() if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_copy(src: Path, dst: Path, chunk: int = 4 * 1024 * 1024) -> None:
    """Copy ``src`` to ``dst`` through a synced temp file and a rename."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out, src.open("rb") as inp:
            while block := inp.read(chunk):
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(dst.parent)
