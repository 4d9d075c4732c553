"""Hashing helpers: sha256 of files (or a prefix of them) in chunks, with optional progress.

A disk image is mostly holes (5.6 GiB, about 400 MiB of data): the holes are found with SEEK_DATA/SEEK_HOLE
and hashed from one buffer of zeros instead of being read, which leaves SHA-256's own cost. Where the file
system cannot tell (EINVAL), the whole file is read.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from qx_common.errors import ExternalError
from qx_common.progress import Progress

CHUNK = 4 * 1024 * 1024
_ZEROS = bytes(CHUNK)


def _regions(fd: int, pos: int, end: int) -> Iterator[tuple[int, int, bool]]:
    """(offset, length, holds data) covering ``[pos, end)``; one data region where holes are unknown."""
    while pos < end:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:  # nothing but a hole up to the end
                yield pos, end - pos, False
                return
            yield pos, end - pos, True
            return
        data = min(data, end)
        if data > pos:
            yield pos, data - pos, False
        if data >= end:
            return
        hole = min(os.lseek(fd, data, os.SEEK_HOLE), end)
        yield data, hole - data, True
        pos = hole


def sha256_file(path: Path, *, limit: int | None = None, label: str | None = None, offset: int = 0) -> str:
    """sha256 of ``limit`` bytes (default: to the end) of ``path`` from byte ``offset``."""
    if offset < 0 or (limit is not None and limit < 0):
        raise ValueError(f"sha256_file: offset {offset} and limit {limit} must not be negative")
    h = hashlib.sha256()
    size = path.stat().st_size - offset
    remaining = max(size, 0) if limit is None else limit
    if remaining > size:
        raise ExternalError(f"{path}: ended {remaining - size} bytes early (truncated by a failed step?)",
                            hint="run make image again")
    bar = Progress(label, remaining) if label else None
    with path.open("rb") as f:
        for start, length, has_data in list(_regions(f.fileno(), offset, offset + remaining)):
            if not has_data:
                while length:
                    n = min(length, CHUNK)
                    h.update(memoryview(_ZEROS)[:n])
                    length -= n
                    if bar:
                        bar.update(n)
                continue
            f.seek(start)
            while length > 0:
                chunk = f.read(min(CHUNK, length))
                if not chunk:
                    raise ExternalError(f"{path}: ended {length} bytes early (truncated by a failed step?)",
                                        hint="run make image again")
                h.update(chunk)
                length -= len(chunk)
                if bar:
                    bar.update(len(chunk))
    if bar:
        bar.close()
    return h.hexdigest()
