"""``GET /metadata/<file>``: the hot path every host polls, answered from memory before routing.

Invariants:

* **Whole files only.** The bytes sent are exactly one complete version of a file on disk. The
  repository (:mod:`.repository`, the one writer) replaces metadata only by rename
  (:func:`qx_common.fs.atomic_write`), so a file's identity ``(inode, mtime_ns, ctime_ns, size)`` changes
  with every version. A miss opens the file and takes identity and bytes from the *same* descriptor
  (``fstat`` + read): bytes are never cached under another version's identity.
* **Never ahead of the repository.** Every lookup costs one ``stat`` of the name, so what is served is
  what is on disk at that moment — also when another server process on the same data directory
  re-signs (an in-process "invalidate on write" hook would miss those). The repository's commit point
  is the rename of ``timestamp.json``, after the versioned ``N.snapshot.json``/``N.targets.json`` it
  names are on disk; so a host that got a timestamp finds the snapshot it points to, and nothing
  serves a timestamp newer than the files on disk.
* **Conditional GET by ETag only.** Each version has a strong ETag (a hash of its bytes); a request
  whose ``If-None-Match`` names it gets ``304``. ``If-Modified-Since`` is ignored (a ``200``, which
  HTTP allows): its one-second resolution cannot tell two ``timestamp.json`` versions signed in the
  same second apart, and a ``304`` then would pin a host to an older timestamp.

Two front ends share one :class:`MetadataFiles`:

* :func:`raw_response`, used by the HTTP front of :mod:`qx_update_server.serving` to answer a plain
  ``GET``/``HEAD /metadata/<name>`` itself with one write, with no ASGI request cycle or task at all
  (uvicorn's per-request cycle was ~2/3 of the time; see docs/performance.md);
* :class:`MetadataFastPath`, ASGI middleware, outermost (before auth, routing and FastAPI): for what the
  front forwards (a query string, escapes, a request pipelined behind an API request) and for
  in-process test clients.

Both give the same status, headers and body. Targets (large files) go through StaticFiles, which streams.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import os
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

PREFIX = "/metadata/"
# 1.root.json, root.json, 12.targets.json, 7.snapshot.json, timestamp.json, 3.release-1.2.0.json (a
# release's delegated targets role) — never a path
_NAME_RE = r"(?:[0-9]{1,12}\.)?(?:root|targets|snapshot|timestamp|release-[0-9A-Za-z.+-]{1,64})\.json"
_NAME = re.compile(f"^{_NAME_RE}$")
# The request target the raw path answers: exactly /metadata/<name>, no query, no escapes (anything
# else — a query string, %-escapes, an absolute URL — goes the ASGI way, which answers it the same).
RAW_TARGET = re.compile(f"^/metadata/({_NAME_RE})$".encode())
MAX_CACHED = 64
MAX_CACHED_FILE = 8 << 20
# The one error shape of the server (qx_update_server.api.errors), written out: this path runs before it.
_NOT_FOUND = json.dumps({"error": "no such metadata file", "field": None,
                         "hint": "hosts fetch timestamp.json, then the versioned files it names"}).encode()
_COMMON = (
    # timestamp.json changes in place; versioned files never change, but a cache must not serve an old
    # timestamp.json, and clients fetch the others once anyway: revalidate (ETag) every time.
    (b"cache-control", b"no-cache"),
    (b"x-content-type-options", b"nosniff"),
)


@dataclass(frozen=True)
class Entry:
    """One version of one metadata file, with its response headers prepared."""

    ident: tuple[int, int, int, int]
    body: bytes
    etag: bytes
    headers: tuple[tuple[bytes, bytes], ...]  # for a 200 (content-length included)
    headers_304: tuple[tuple[bytes, bytes], ...]
    raw_200: bytes  # the same headers as HTTP/1.1 lines, for the raw path (no status line, no Date)
    raw_304: bytes


def _lines(headers: tuple[tuple[bytes, bytes], ...]) -> bytes:
    return b"".join(k + b": " + v + b"\r\n" for k, v in headers)


def _entry(ident: tuple[int, int, int, int], body: bytes) -> Entry:
    etag = b'"' + hashlib.sha256(body).hexdigest()[:32].encode() + b'"'
    h304 = ((b"etag", etag),) + _COMMON
    h200 = ((b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())) + h304
    return Entry(ident, body, etag, h200, h304, _lines(h200), _lines(h304))


_NOT_FOUND_HEADERS = ((b"content-type", b"application/json"),
                      (b"content-length", str(len(_NOT_FOUND)).encode())) + _COMMON


def etag_matches(if_none_match: bytes | None, etag: bytes) -> bool:
    """RFC 9110 13.1.2 weak comparison: ``*`` or any listed tag (``W/`` ignored) equal to ``etag``."""
    if not if_none_match:
        return False
    for tag in if_none_match.split(b","):
        tag = tag.strip()
        if tag == b"*" or tag.removeprefix(b"W/") == etag:
            return True
    return False


class MetadataFiles:
    """The metadata directory's files in memory (at most :data:`MAX_CACHED`), one ``stat`` per lookup.

    Thread-safe (the event loop and test clients' threads may share one): the cache is only ever
    replaced entry by entry under a lock; an :class:`Entry` is immutable.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._prefix = os.path.join(os.fspath(directory), "")  # + name: the name has no "/" (the pattern)
        self._cache: OrderedDict[str, Entry] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: str) -> Entry | None:
        """The current version of ``name`` (already checked against the name pattern), or None."""
        path = self._prefix + name  # (os.path.join: ~8 % of the front's Python time per request, profiled)
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        hit = self._cache.get(name)
        if hit is not None and hit.ident == (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size):
            return hit
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except (FileNotFoundError, NotADirectoryError):
            return None  # removed since the stat (a retired version)
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())  # identity and bytes from one descriptor: one version, whole
            if st.st_size > MAX_CACHED_FILE:
                return None  # the repository's files are bounded far below this (contract.py); not served
            body = f.read()
        entry = _entry((st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size), body)
        with self._lock:
            self._cache[name] = entry
            self._cache.move_to_end(name)
            while len(self._cache) > MAX_CACHED:
                self._cache.popitem(last=False)
        return entry


_date = [0, b""]


def http_date() -> bytes:
    """The Date header's value, made once per second."""
    now = int(time.time())
    if now != _date[0]:
        _date[:] = [now, email.utils.formatdate(now, usegmt=True).encode()]
    return _date[1]  # type: ignore[return-value]


def raw_response(files: MetadataFiles, name: bytes, *, head: bool, if_none_match: bytes | None,
                 keep_alive: bool) -> bytes:
    """A whole HTTP/1.1 response to ``GET``/``HEAD /metadata/<name>`` (``name`` matched :data:`RAW_TARGET`)."""
    entry = files.get(name.decode("ascii"))
    close = b"" if keep_alive else b"connection: close\r\n"
    date = b"date: " + http_date() + b"\r\n"
    if entry is None:
        return (b"HTTP/1.1 404 Not Found\r\n" + date + _lines(_NOT_FOUND_HEADERS) + close + b"\r\n"
                + (b"" if head else _NOT_FOUND))
    if etag_matches(if_none_match, entry.etag):
        return b"HTTP/1.1 304 Not Modified\r\n" + date + entry.raw_304 + close + b"\r\n"
    return b"HTTP/1.1 200 OK\r\n" + date + entry.raw_200 + close + b"\r\n" + (b"" if head else entry.body)


class MetadataFastPath:
    """ASGI middleware: answer GET/HEAD under :data:`PREFIX` from ``files``, pass the rest on."""

    def __init__(self, app: ASGIApp, files: MetadataFiles) -> None:
        self.app = app
        self.files = files

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD") or not scope["path"].startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        name = scope["path"][len(PREFIX):]
        head = scope["method"] == "HEAD"
        entry = self.files.get(name) if _NAME.match(name) else None
        if entry is None:
            await _respond(send, 404, _NOT_FOUND_HEADERS, b"" if head else _NOT_FOUND)
            return
        inm = b",".join(v for k, v in scope["headers"] if k == b"if-none-match") or None
        if etag_matches(inm, entry.etag):
            await _respond(send, 304, entry.headers_304, b"")
            return
        await _respond(send, 200, entry.headers, b"" if head else entry.body)


async def _respond(send: Send, status: int, headers: tuple[tuple[bytes, bytes], ...], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": list(headers)})
    await send({"type": "http.response.body", "body": body})
