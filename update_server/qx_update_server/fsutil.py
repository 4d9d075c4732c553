"""Atomic file writes and the test-only crash hook.

Invariant: a file a reader can open is always complete. Every write goes to a temporary file in the
same directory, is fsynced, renamed over the target and the directory is fsynced, so a crash (even
``kill -9`` or power loss) leaves either the old or the new content, never a mix.

``crashpoint(step)`` kills the process with SIGKILL when ``QX_SERVER_TEST_CRASH_AT`` names ``step``.
It exists only so tests can prove that a crash at each exact step of a publish leaves a repository
that verifies; nothing sets that variable in production.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

CRASH_ENV = "QX_SERVER_TEST_CRASH_AT"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a partial one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def crashpoint(step: str) -> None:
    """Test hook: die here, at once and without cleanup, if the environment asks for it."""
    if os.environ.get(CRASH_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)
