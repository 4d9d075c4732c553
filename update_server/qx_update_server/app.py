"""The HTTP service: the public static repository, the authenticated API and the admin page.

Routes
------
Public, read-only (plain static files; any web server could serve the same directory):
``/metadata/…``, ``/targets/…``, ``/healthz``, ``/admin`` (a page with no data of its own; it asks for a
token and calls the API).

Everything else needs ``Authorization: Bearer <token>``. The check is a middleware that *denies by
default*: only the public prefixes above pass without a valid token, so a route added later cannot
forget authentication (tests enumerate ``app.routes`` to prove it). Each route then asks for a scope
(:data:`qx_update_server.storage.SCOPES`); a valid token without it gets 403.

Order of checks for every request, before any body byte is read (so no request — however large, with
any token or none — is parsed before it is known to be allowed and small enough):

1. ``MetadataFastPath`` answers ``GET /metadata/…`` from memory (the path every host polls);
2. :class:`AuthMiddleware`: the token (401), then the route's scope from :data:`ROUTE_SCOPES` (403), then
   the body size: JSON bodies at most :data:`MAX_JSON_BODY` bytes with a Content-Length (413/411);
   upload bodies are streamed with the per-file limit of :func:`qx_update_server.release.upload_limit`.

Publishing is three calls so large files stream with a progress bar and a size limit:
``POST /v1/uploads`` → ``PUT /v1/uploads/{id}/{file}`` (each release file) →
``POST /v1/uploads/{id}/publish``. The server verifies manifest + SHA256SUMS + bytes before signing.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio.to_thread
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Receive, Scope, Send

from qx_common import log
from qx_common.errors import EnvironmentError_, QxError, UserError
from qx_update_server import contract, release
from qx_update_server.contract import CHANNELS
from qx_update_server.metadata_http import MetadataFastPath
from qx_update_server.repository import Repository
from qx_update_server.storage import (FLEET_PAGE, FLEET_PAGE_MAX, HEALTH, MIN_HOST_KEY, HostIdentityError, Storage,
                                      Token, open_storage)

_log = log.get("update_server.app")

PUBLIC_PREFIXES = ("/metadata/", "/targets/", "/admin/static/")
PUBLIC_PATHS = frozenset({"/healthz", "/admin", "/admin/"})
DEFAULT_MAX_UPLOAD = 4 << 30  # per file; a root payload is ~0.5 GiB today
_UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")
HOST_KEY_HEADER = "X-Quantix-Host-Key"
_HOST_KEY = re.compile(rf"[A-Za-z0-9_-]{{{MIN_HOST_KEY},256}}")
UPLOAD_MAX_AGE = 24 * 3600  # s: an upload not published within a day is abandoned
STATIC = Path(__file__).with_name("static")


_WRITE_BATCH = 1 << 20


class _Sink:
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
            if old or not _UPLOAD_ID.match(d.name) or not self._alive(owner):
                shutil.rmtree(d, ignore_errors=True)
        for f in self.owners.iterdir():
            if not self._alive(f.name):
                f.unlink(missing_ok=True)

    def new(self) -> str:
        upload_id = self.instance + secrets.token_hex(8)
        (self.root / upload_id).mkdir()
        return upload_id

    def close(self) -> None:
        os.close(self._fd)


# The admin page loads only its own script and style (no inline script: a stored string can never run),
# cannot be framed (clickjacking), and no response may be sniffed into another type.
ADMIN_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                               "img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class SecurityHeaders:
    """Adds nosniff to every response and :data:`ADMIN_HEADERS` to the admin page's static files."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = ADMIN_HEADERS if scope["path"].startswith("/admin") else {"X-Content-Type-Options": "nosniff"}
        encoded = [(k.lower().encode(), v.encode()) for k, v in extra.items()]

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                names = {k for k, _ in encoded}
                message = {**message, "headers": [h for h in message.get("headers", []) if h[0] not in names]
                           + encoded}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


# The scope each authenticated route needs, checked by AuthMiddleware *before* the body is read (FastAPI
# parses a body before it runs a route's dependencies, so ``need()`` alone would come too late). A test
# proves every non-public route of the app is listed here; ``need()`` stays on each route as a second check.
MAX_JSON_BODY = 64 << 10
_SEG = r"[^/]+"
ROUTE_SCOPES: tuple[tuple[str, re.Pattern[str], str], ...] = tuple(
    (method, re.compile(pattern), scope) for method, pattern, scope in (
        ("GET", r"/v1/releases", "read"),
        ("POST", r"/v1/uploads", "publish"),
        ("PUT", rf"/v1/uploads/{_SEG}/{_SEG}", "publish"),
        ("POST", rf"/v1/uploads/{_SEG}/publish", "publish"),
        ("POST", rf"/v1/releases/{_SEG}/promote", "promote"),
        ("POST", rf"/v1/releases/{_SEG}/yank", "yank"),
        ("POST", rf"/v1/releases/{_SEG}/remove", "yank"),
        ("POST", rf"/v1/releases/{_SEG}/rollout", "rollout"),
        ("POST", r"/v1/keys/init", "keys"),
        ("POST", r"/v1/keys/rotate", "keys"),
        ("GET", r"/v1/keys/status", "read"),
        ("POST", r"/v1/checkin", "checkin"),
        ("GET", r"/v1/fleet", "read"),
        ("GET", r"/v1/audit", "read"),
    ))
_STREAMED = re.compile(rf"/v1/uploads/{_SEG}/{_SEG}")  # PUT: the handler streams it with its own limit


def route_scope(method: str, path: str) -> str | None:
    for m, pattern, scope in ROUTE_SCOPES:
        if (m == method or method == "HEAD" and m == "GET") and pattern.fullmatch(path):
            return scope
    return None


async def _reply(scope: Scope, receive: Receive, send: Send, status: int, error: str, hint: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
    resp = JSONResponse({"error": error, "hint": hint}, status_code=status, headers=headers)
    await resp(scope, receive, send)


class AuthMiddleware:
    """Deny by default: a request to a non-public path without a known bearer token gets 401."""

    def __init__(self, app: ASGIApp, storage: Storage) -> None:
        self.app = app
        self.storage = storage

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        token: Token | None = None
        for k, v in scope["headers"]:
            if k == b"authorization":
                kind, _, secret = v.decode("latin-1").partition(" ")
                if kind.lower() == "bearer" and secret:
                    try:
                        # In a thread: with PostgreSQL the lookup is a network round trip.
                        token = await anyio.to_thread.run_sync(self.storage.lookup_token, secret.strip())
                    except QxError as e:  # the database is unreachable: say so, not "bad token"
                        _log.error("token lookup failed: %s", e.message)
                        resp = JSONResponse({"error": e.message, "hint": e.hint}, status_code=503)
                        await resp(scope, receive, send)
                        return
        if token is None:
            await _reply(scope, receive, send, 401, "a valid API token is required",
                         "send Authorization: Bearer <token> (qx-update-server token create)",
                         {"WWW-Authenticate": "Bearer"})
            return
        method, path = scope["method"], scope["path"]
        needed = route_scope(method, path)
        if needed is not None and needed not in token.scopes:
            await _reply(scope, receive, send, 403, f"this token lacks the {needed!r} scope",
                         f"ask for a token with the {needed!r} scope (qx-update-server token create --scopes ...)")
            return
        if not (method == "PUT" and _STREAMED.fullmatch(path)):
            headers = dict(scope["headers"])
            if b"transfer-encoding" in headers:
                await _reply(scope, receive, send, 411, "a request body needs a Content-Length",
                             "send the JSON body with a Content-Length header (not chunked)")
                return
            length = headers.get(b"content-length", b"0")
            if not length.isdigit():
                await _reply(scope, receive, send, 400, "Content-Length is not a byte count")
                return
            if int(length) > MAX_JSON_BODY:
                await _reply(scope, receive, send, 413,
                             f"request body of {int(length)} bytes is over the limit of {MAX_JSON_BODY}",
                             "API bodies are small JSON documents; release files go to PUT /v1/uploads/<id>/<file>")
                return
        scope.setdefault("state", {})["token"] = token
        await self.app(scope, receive, send)


def need(scope_name: str) -> Callable[[Request], Token]:
    def dep(request: Request) -> Token:
        token: Token = request.state.token
        if scope_name not in token.scopes:
            raise HTTPException(403, f"this token lacks the {scope_name!r} scope")
        return token
    return dep


class PublishBody(BaseModel):
    channel: str = "dev"
    notes: str = Field("", max_length=contract.MAX_NOTES_BYTES)  # in bytes: checked again by repo.publish


class PromoteBody(BaseModel):
    to: str


class RolloutBody(BaseModel):
    percent: float | None = Field(None, ge=0, le=100)
    paused: bool | None = None


class KeysInitBody(BaseModel):
    root_keys: int = Field(1, ge=1, le=16)
    threshold: int = Field(1, ge=1, le=16)


class CheckinBody(BaseModel):
    host_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
    version: str = Field(max_length=64)
    slot: str = Field(pattern=r"^[ab]$")
    channel: str = Field(pattern="^(" + "|".join(CHANNELS) + ")$")
    health: str = Field(pattern="^(" + "|".join(HEALTH) + ")$")
    last_error: str | None = Field(None, max_length=4000)


class ListenerSplit:
    """With a separate admin listener, the public one serves only what hosts use.

    ``qx-update-server serve --listen PUBLIC --admin-listen ADMIN``: requests that arrive on any socket
    but ``admin_address`` may reach only :data:`PUBLIC_LISTENER_PATHS` (the repository, the health
    check and host check-ins); the admin API and the admin page answer 404 there. So the public port
    can face the internet while the admin one stays on an internal network.
    """

    def __init__(self, app: ASGIApp, admin_address: tuple[str, int]) -> None:
        self.app = app
        self.admin_address = admin_address

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and tuple(scope.get("server") or ())[:2] != self.admin_address:
            path = scope["path"]
            if not (path.startswith(("/metadata/", "/targets/")) or path in ("/healthz", "/v1/checkin")):
                await _reply(scope, receive, send, 404, f"{path} is not served on the public listener",
                             "the admin API and page are on the server's --admin-listen address")
                return
        await self.app(scope, receive, send)


def create_app(data_dir: Path, *, database: str | None = None, root_keys_dir: Path | None = None,
               max_upload: int = DEFAULT_MAX_UPLOAD, refresh_interval: float = 600.0,
               admin_address: tuple[str, int] | None = None) -> FastAPI:
    """The service. ``admin_address``: the (host, port) of a separate admin listener (see ListenerSplit)."""
    repo = Repository(data_dir, root_keys_dir=root_keys_dir)
    storage = open_storage(data_dir, database)
    staging = Staging(data_dir)
    staging_root = staging.root
    repo.repair()
    (repo.metadata_dir).mkdir(parents=True, exist_ok=True)
    (repo.targets_dir).mkdir(parents=True, exist_ok=True)

    async def resigner() -> None:
        """Re-sign timestamp/snapshot/targets before they expire, for as long as the server runs."""
        while True:
            try:
                await asyncio.to_thread(staging.clean)
                if repo.initialized():
                    roles = await asyncio.to_thread(repo.refresh)
                    if roles:
                        await asyncio.to_thread(storage.audit, "server", "resign", {"roles": roles})
            except QxError as e:
                _log.error("re-signing failed: %s", e.message)
            await asyncio.sleep(refresh_interval)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(resigner())
        yield
        task.cancel()
        storage.close()
        staging.close()

    app = FastAPI(title="qx-update-server", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.repo = repo
    app.state.storage = storage

    @app.exception_handler(QxError)
    async def qx_error(_: Request, e: QxError) -> JSONResponse:
        status = 400 if isinstance(e, UserError) else 503 if isinstance(e, EnvironmentError_) else 500
        if isinstance(e, UserError) and "is not published" in e.message:
            status = 404
        return JSONResponse({"error": e.message, "hint": e.hint}, status_code=status)

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"ok": True, "initialized": repo.initialized()}

    @app.get("/admin")
    def admin() -> FileResponse:
        return FileResponse(STATIC / "admin.html", media_type="text/html", headers=ADMIN_HEADERS)

    # ---- releases ----------------------------------------------------------------------------

    @app.get("/v1/releases")
    def list_releases(_: Token = Depends(need("read"))) -> dict[str, Any]:
        if not repo.initialized():
            return {"initialized": False, "releases": [], "channels": list(CHANNELS)}
        records = storage.release_records()
        out = []
        for r in repo.releases():
            rec = records.get(r["version"], {})
            out.append(r | {"published_by": rec.get("published_by"), "published_at": rec.get("published_at")})
        # Releases that left the signed set (retention or remove): no host sees them; listed for the record.
        retired = [{"version": v} | r for v, r in sorted(repo.retired().items(), key=lambda kv: kv[1]["at"],
                                                          reverse=True)[:100]]
        return {"initialized": True, "releases": out, "channels": list(CHANNELS), "retired": retired}

    @app.post("/v1/uploads")
    def new_upload(_: Token = Depends(need("publish"))) -> dict[str, Any]:
        upload_id = staging.new()
        return {"upload_id": upload_id, "max_file_size": max_upload}

    def upload_dir(upload_id: str) -> Path:
        d = staging_root / upload_id
        if not _UPLOAD_ID.match(upload_id) or not d.is_dir():
            raise HTTPException(404, f"upload {upload_id!r} does not exist (uploads end with a server restart)")
        return d

    @app.put("/v1/uploads/{upload_id}/{filename}")
    async def upload_file(upload_id: str, filename: str, request: Request,
                          _: Token = Depends(need("publish"))) -> dict[str, Any]:
        """Stream the body to ``.<file>.part`` (size-limited), fsync, rename; disk I/O runs in threads.

        The event loop only collects chunks; every open/write/fsync/rename happens in a worker thread
        (``anyio.to_thread``), buffered to ~1 MiB per call so a slow disk never stalls the loop that
        also serves metadata to hosts.
        """
        d = upload_dir(upload_id)
        release.check_filename(filename)
        declared = request.headers.get("content-length")
        limit = release.upload_limit(filename, max_upload)
        if declared is not None:
            if not declared.isdigit():
                raise HTTPException(400, f"Content-Length: {declared!r} is not a byte count")
            if int(declared) > limit:
                raise HTTPException(413, f"{filename}: {declared} bytes is over the limit of {limit}")
        sink = await anyio.to_thread.run_sync(_Sink, d, filename)
        try:
            buf: list[bytes] = []
            buffered = 0
            async for chunk in request.stream():
                if sink.size + buffered + len(chunk) > limit:
                    raise HTTPException(413, f"{filename}: over the limit of {limit} bytes")
                buf.append(chunk)
                buffered += len(chunk)
                if buffered >= _WRITE_BATCH:
                    await anyio.to_thread.run_sync(sink.write, b"".join(buf))
                    buf, buffered = [], 0
            if buf:
                await anyio.to_thread.run_sync(sink.write, b"".join(buf))
            if declared is not None and sink.size != int(declared):
                raise HTTPException(400, f"{filename}: got {sink.size} bytes, Content-Length said {declared}")
            await anyio.to_thread.run_sync(sink.commit)
        finally:
            await anyio.to_thread.run_sync(sink.discard)
        return {"file": filename, "size": sink.size}

    @app.post("/v1/uploads/{upload_id}/publish")
    def publish(upload_id: str, body: PublishBody, token: Token = Depends(need("publish"))) -> dict[str, Any]:
        d = upload_dir(upload_id)
        try:
            rel = release.load([d])
            repo.publish(rel, channel=body.channel, notes=body.notes, move=True)
        finally:
            shutil.rmtree(d, ignore_errors=True)
        storage.record_release(rel.version, token.name, rel.manifest)
        storage.audit(token.name, "publish", {"version": rel.version, "channel": body.channel}, token.id)
        return next(r for r in repo.releases() if r["version"] == rel.version)

    @app.post("/v1/releases/{version}/promote")
    def promote(version: str, body: PromoteBody, token: Token = Depends(need("promote"))) -> dict[str, Any]:
        out = repo.promote(version, to=body.to)
        storage.audit(token.name, "promote", {"version": version, "to": body.to}, token.id)
        return out

    @app.post("/v1/releases/{version}/yank")
    def yank(version: str, token: Token = Depends(need("yank"))) -> dict[str, Any]:
        out = repo.yank(version)
        storage.audit(token.name, "yank", {"version": version}, token.id)
        return out

    @app.post("/v1/releases/{version}/remove")
    def remove(version: str, token: Token = Depends(need("yank"))) -> dict[str, Any]:
        """Take a release out of the signed targets for good (its version is never published again)."""
        out = repo.remove(version)
        storage.audit(token.name, "remove", {"version": version}, token.id)
        return out

    @app.post("/v1/releases/{version}/rollout")
    def rollout(version: str, body: RolloutBody, token: Token = Depends(need("rollout"))) -> dict[str, Any]:
        out = repo.rollout(version, percent=body.percent, paused=body.paused)
        storage.audit(token.name, "rollout", body.model_dump() | {"version": version}, token.id)
        return out

    # ---- keys ----------------------------------------------------------------------------------

    @app.post("/v1/keys/init")
    def keys_init(body: KeysInitBody, token: Token = Depends(need("keys"))) -> dict[str, Any]:
        repo.init(root_keys=body.root_keys, threshold=body.threshold)
        storage.audit(token.name, "keys-init", body.model_dump(), token.id)
        return repo.key_status()

    @app.post("/v1/keys/rotate")
    def keys_rotate(token: Token = Depends(need("keys"))) -> dict[str, Any]:
        version = repo.rotate()
        storage.audit(token.name, "keys-rotate", {"root_version": version}, token.id)
        return repo.key_status()

    @app.get("/v1/keys/status")
    def keys_status(_: Token = Depends(need("read"))) -> dict[str, Any]:
        if not repo.initialized():
            return {"initialized": False, "roles": {}}
        return {"initialized": True} | repo.key_status()

    # ---- fleet ---------------------------------------------------------------------------------

    @app.post("/v1/checkin", status_code=204)
    def checkin(body: CheckinBody, request: Request, token: Token = Depends(need("checkin"))) -> None:
        """A host's report. Identity: a token made with ``--host`` reports only that host; a host key
        (``X-Quantix-Host-Key``, the host's own secret) is bound to the host id at its first check-in
        and must match from then on. A refused check-in writes nothing and is audited."""
        report = body.model_dump()
        host_key = request.headers.get(HOST_KEY_HEADER)
        problem = None
        if token.host_id is not None and token.host_id != body.host_id:
            problem = f"this token may report only host {token.host_id}, not {body.host_id}"
        elif host_key is not None and not _HOST_KEY.fullmatch(host_key):
            raise HTTPException(400, f"{HOST_KEY_HEADER}: must be {MIN_HOST_KEY}-256 characters of A-Z a-z 0-9 _ -")
        else:
            try:
                storage.checkin(report, host_key=host_key, token_id=token.id)
            except HostIdentityError as e:
                problem = str(e)
        if problem:
            storage.audit(token.name, "checkin-refused", {"host_id": body.host_id, "reason": problem}, token.id)
            raise HTTPException(403, problem)

    @app.get("/v1/fleet")
    def fleet(limit: int = FLEET_PAGE, after: str | None = None,
              _: Token = Depends(need("read"))) -> dict[str, Any]:
        """One page of hosts in host_id order; ``next`` is the ``after`` of the next page (null at the end).

        The first page (no ``after``) also carries ``summary``: totals by health and version.
        """
        if not 1 <= limit <= FLEET_PAGE_MAX:
            raise UserError(f"limit: {limit} must be from 1 to {FLEET_PAGE_MAX}")
        hosts = storage.fleet(limit + 1, after)
        out: dict[str, Any] = {"hosts": hosts[:limit], "next": hosts[limit - 1]["host_id"] if len(hosts) > limit else None}
        if after is None:
            out["summary"] = storage.fleet_summary()
        return out

    @app.get("/v1/audit")
    def audit(limit: int = 100, _: Token = Depends(need("read"))) -> dict[str, Any]:
        return {"entries": storage.audit_log(min(max(limit, 1), 1000))}

    # ---- the static repository (what hosts read) ------------------------------------------------

    app.mount("/targets", StaticFiles(directory=repo.targets_dir, check_dir=False), name="targets")
    app.mount("/admin/static", StaticFiles(directory=STATIC), name="admin-static")
    app.add_middleware(AuthMiddleware, storage=storage)
    app.add_middleware(SecurityHeaders)
    if admin_address is not None:
        app.add_middleware(ListenerSplit, admin_address=admin_address)
    # Outermost: the metadata hosts poll is answered before auth and routing (it is public anyway).
    app.add_middleware(MetadataFastPath, directory=repo.metadata_dir)
    return app
