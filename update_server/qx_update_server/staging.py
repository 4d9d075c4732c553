"""Uploads in progress: ``<data-dir>/staging/<upload id>/<file>``, shared by every server on the data dir.

Call order: :class:`Staging` at server start (cleans what dead servers left) → :meth:`Staging.new` per
``POST /v1/uploads`` → one :class:`Sink` per streamed file (``.<name>.part`` until
:meth:`Sink.commit` renames it into place, so a half-written file is never taken for a whole one) →
:meth:`Staging.dir` at publish → :meth:`Staging.close` at shutdown.
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import shutil
import time
from pathlib import Path

from qx_update_server.errors import NotFound

UPLOAD_MAX_AGE = 24 * 3600  # s: an upload not published within a day is abandoned
UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")

WRITE_BATCH = 1 << 20  # bytes collected before one write in a worker thread


class Sink:
    """One upload file being written: ``.<name>.part`` until :meth:`commit` renames it into place.

    Every method blocks (disk I/O); the async handler calls them through a worker thread.
    """

    def __init__(self, directory: Path, name: str) -> None:
        self.dest = directory / name
        self.tmp = directory / f".{name}.part"
        self.f = self.tmp.open("wb")
        self.size = 0

    def write(self, data: bytes) -> None:
        self.f.write(data)
        self.size += len(data)

    def commit(self) -> None:
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        os.replace(self.tmp, self.dest)

    def discard(self) -> None:
        """Close and remove the partial file (a no-op after commit)."""
        if not self.f.closed:
            self.f.close()
        self.tmp.unlink(missing_ok=True)


class Staging:
    """Uploads in progress (``<data-dir>/staging/<upload id>``), shared by every server process on the
    data directory, so an upload may even continue on another server behind a load balancer.

    An upload id is ``<instance><random>``: the first 16 hex digits name the server process that
    created it. Each process holds an ``flock`` on ``<data-dir>/.staging-owners/<instance>`` for its
    whole life, so at start (and on every re-sign pass) a server deletes only the uploads of processes
    that are gone — never a running server's — and any upload older than :data:`UPLOAD_MAX_AGE`.
    """

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "staging"
        self.owners = data_dir / ".staging-owners"
        self.root.mkdir(parents=True, exist_ok=True)
        self.owners.mkdir(parents=True, exist_ok=True)
        self.instance = secrets.token_hex(8)
        self._fd = os.open(self.owners / self.instance, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        self.clean()

    def _alive(self, instance: str) -> bool:
        if instance == self.instance:
            return True
        try:
            fd = os.open(self.owners / instance, os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # releases the lock if we got it
        return False

    def clean(self) -> None:
        """Delete uploads of server processes that are gone, and uploads older than UPLOAD_MAX_AGE."""
        now = time.time()
        for d in self.root.iterdir():
            owner = d.name[:16]
            try:
                old = now - d.stat().st_mtime > UPLOAD_MAX_AGE
            except FileNotFoundError:
                continue
            if old or not UPLOAD_ID.match(d.name) or not self._alive(owner):
                shutil.rmtree(d, ignore_errors=True)
        for f in self.owners.iterdir():
            if not self._alive(f.name):
                f.unlink(missing_ok=True)

    def new(self) -> str:
        upload_id = self.instance + secrets.token_hex(8)
        (self.root / upload_id).mkdir()
        return upload_id

    def dir(self, upload_id: str) -> Path:
        """The directory of an upload in progress, or :class:`NotFound`."""
        d = self.root / upload_id
        if not UPLOAD_ID.match(upload_id) or not d.is_dir():
            raise NotFound(f"upload {upload_id!r} does not exist", field="upload_id",
                           hint="start a new upload (POST /v1/uploads); uploads end after a day or when "
                                "every server that could finish them has stopped")
        return d

    def close(self) -> None:
        os.close(self._fd)
