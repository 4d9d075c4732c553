"""Crash-safe file writes — the one implementation every Quantix package uses.

Invariant: a file a reader can open is always complete. :func:`atomic_write` and :func:`atomic_copy`
write a uniquely named temp file in the target's directory (never another writer's, so two writers
cannot corrupt each other), fsync it, rename it over the target and fsync the directory: after a
crash or power cut the target holds the old or the new content, never a mix. On an error the temp
file is removed; only a kill -9 between create and rename can leave one (named ``.<name>.*.tmp``,
which readers of the directory ignore).

A target that is a symlink is written *through* it (the link stays): host configuration in the
read-only ``/etc`` points into the data partition this way.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

CHUNK = 4 * 1024 * 1024


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (a no-op where the filesystem refuses directory fsync)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError:
        pass  # vfat on some kernels refuses fsync on directories; the rename itself is done
    finally:
        os.close(fd)


def _target(path: Path) -> Path:
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def atomic_write(path: Path, data: bytes | str, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically (temp file + fsync + rename + fsync of the directory)."""
    raw = data.encode() if isinstance(data, str) else data
    target = _target(Path(path))
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def atomic_copy(src: Path, dst: Path, mode: int = 0o644) -> None:
    """Copy ``src`` to ``dst`` through a synced temp file and a rename."""
    target = _target(Path(dst))
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out, Path(src).open("rb") as inp:
            while block := inp.read(CHUNK):
                out.write(block)
            out.flush()
            os.fchmod(out.fileno(), mode)
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)
