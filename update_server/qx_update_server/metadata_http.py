"""``GET /metadata/<file>``: the hot path every host polls, answered from memory before routing.

Invariant: the bytes sent are exactly one complete version of the file on disk. Metadata files are
only ever replaced by rename (:func:`qx_common.fs.atomic_write`), so a file's identity
``(inode, mtime_ns, size)`` changes with every new version. Each request costs one ``stat``; the file
is read again only when that identity differs from the cached one. A rename between the ``stat`` and
the read at worst caches new bytes under the old identity, which the next ``stat`` corrects.

Why not StaticFiles: it stats, opens and reads through a worker thread on every request, behind the
whole router; at fleet scale hosts poll ``timestamp.json`` far more than anything else. Targets (large
files) still go through StaticFiles, which streams them.
"""

from __future__ import annotations

import json
import os
import re
from collections import OrderedDict
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

PREFIX = "/metadata/"
# 1.root.json, root.json, 12.targets.json, 7.snapshot.json, timestamp.json, 3.release-1.2.0.json (a
# release's delegated targets role) — never a path
_NAME = re.compile(r"^(?:[0-9]{1,12}\.)?(?:root|targets|snapshot|timestamp|release-[0-9A-Za-z.+-]{1,64})\.json$")
MAX_CACHED = 64
# The one error shape of the server (qx_update_server.api.errors), written out: this path runs before it.
_NOT_FOUND = json.dumps({"error": "no such metadata file", "field": None,
                         "hint": "hosts fetch timestamp.json, then the versioned files it names"}).encode()
MAX_CACHED_FILE = 8 << 20


class MetadataFastPath:
    """ASGI middleware: answer GET/HEAD under :data:`PREFIX` from ``directory``, pass the rest on."""

    def __init__(self, app: ASGIApp, directory: Path) -> None:
        self.app = app
        self.directory = directory
        self._cache: OrderedDict[str, tuple[tuple[int, int, int], bytes]] = OrderedDict()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD") or not scope["path"].startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        name = scope["path"][len(PREFIX):]
        data = self._get(name) if _NAME.match(name) else None
        if data is None:
            await _respond(send, 404, _NOT_FOUND, head=False)
            return
        await _respond(send, 200, data, head=scope["method"] == "HEAD")

    def _get(self, name: str) -> bytes | None:
        path = self.directory / name
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        ident = (st.st_ino, st.st_mtime_ns, st.st_size)
        hit = self._cache.get(name)
        if hit is not None and hit[0] == ident:
            self._cache.move_to_end(name)
            return hit[1]
        try:
            data = path.read_bytes()  # small files (a few KB; a release role at most ~25 KB)
        except FileNotFoundError:
            return None
        if len(data) <= MAX_CACHED_FILE:
            self._cache[name] = (ident, data)
            self._cache.move_to_end(name)
            while len(self._cache) > MAX_CACHED:
                self._cache.popitem(last=False)
        return data


async def _respond(send: Send, status: int, body: bytes, *, head: bool) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        # timestamp.json changes in place; versioned files never change, but a cache must not
        # serve an old timestamp.json, and clients fetch the others once anyway.
        (b"cache-control", b"no-cache"),
    ]})
    await send({"type": "http.response.body", "body": b"" if head else body})
