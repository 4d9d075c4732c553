"""The web client's front door: its files, sign-in and sign-out, and the session check the API gate asks.

Wiring (``qx_node.api.create_app``): ``web = WebClient(node)``; :class:`~qx_node.auth.BearerAuth` gets
``session=web.check`` (a request without ``Authorization`` but with the session cookie); ``UiFront``
wraps BearerAuth (outside it, inside ``CatchAll``) and answers these paths itself, before any token check:

* ``GET /`` and ``GET /ui/...``: the client (``qx_node/web/``: ``index.html``, ``app.js``, ``app.css`` and
  the vendored libraries under ``vendor/``), each with strict security headers (:data:`SECURITY_HEADERS`;
  the CSP allows scripts and styles from the node only — no inline script but the import map, allowed by
  its hash — and no framing). The file list is fixed at start; anything else under ``/ui/`` is a 404.
  Files are revalidated by ETag and sent gzip-compressed when the browser accepts it.
* ``POST /ui/login`` ``{"password": ...}`` (root's, as the console checks it) or ``{"token": ...}`` (the
  API token): 200 ``{"csrf", "via", "idle_seconds"}`` and the session cookie; 401 wrong; 423 password
  while lockdown mode is on; 429 with ``Retry-After`` while the source (or every source) is locked out.
* ``POST /ui/logout`` (cookie + CSRF token): ends the session, clears the cookie. ``GET /ui/session``:
  ``{"signed_in": true, "csrf", "via", "idle_seconds"}`` (a reloaded page gets its CSRF token again) or
  ``{"signed_in": false, "reason"}``.

Every other path goes on to the API unchanged: the web client has no route of its own that does
anything to the host. The rules of sessions, CSRF and lockout are in :mod:`qx_node.websession`.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import json
import mimetypes
import re
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

from fastapi.concurrency import run_in_threadpool
from starlette.requests import Request

from qx_common import log
from qx_common.errors import EnvironmentError_
from qx_common.passwords import verify
from qx_node.lockdown import is_locked, lockdown_path
from qx_node.node import Node
from qx_node.websession import (BACKGROUND_HEADER, COOKIE, CSRF_HEADER, IDLE_SECONDS, SAFE_METHODS, Session,
                                Sessions, csrf_ok)

_log = log.get("node.ui")
WEB_DIR = Path(__file__).resolve().parent.parent / "web"
DEFAULT_SHADOW = Path("/etc/shadow")
MAX_LOGIN_BODY = 4096
_IMPORTMAP = re.compile(rb'<script type="importmap">(.*?)</script>', re.S)
_SERVED_SUFFIXES = {".html", ".js", ".css"}


def _csp(script_hashes: list[str]) -> str:
    scripts = " ".join(["'self'"] + [f"'sha256-{h}'" for h in script_hashes])
    return ("default-src 'none'; " f"script-src {scripts}; style-src 'self'; img-src 'self' data: blob:; "
            "connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; "
            "frame-ancestors 'none'")


# No Strict-Transport-Security: the node's certificate is self-signed, and HSTS would take away the
# browser's "accept this certificate" step that an operator needs to reach a new host at all.
SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"), (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), usb=(), payment=()"),
]


@dataclass(frozen=True)
class _File:
    body: bytes
    gz: bytes | None
    ctype: str
    etag: str


def _load(web_dir: Path) -> tuple[dict[str, _File], list[str]]:
    """Every servable file under ``web_dir`` by URL path, and the hashes of index.html's import map."""
    files: dict[str, _File] = {}
    hashes: list[str] = []
    for f in sorted(web_dir.rglob("*")):
        if not f.is_file() or f.suffix not in _SERVED_SUFFIXES:
            continue
        body = f.read_bytes()
        ctype = (mimetypes.guess_type(f.name)[0] or "application/octet-stream")
        if ctype.startswith("text/") or ctype.endswith("javascript"):
            ctype += "; charset=utf-8"
        gz = gzip.compress(body, 9, mtime=0) if len(body) > 1024 else None
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        files["/ui/" + f.relative_to(web_dir).as_posix()] = _File(body, gz, ctype, etag)
        if f.name == "index.html" and f.parent == web_dir:
            hashes = [base64.b64encode(hashlib.sha256(m).digest()).decode() for m in _IMPORTMAP.findall(body)]
    return files, hashes


def _headers(scope: dict[str, Any]) -> dict[bytes, bytes]:
    return {k: v for k, v in scope.get("headers", ())}


def _cookie(headers: dict[bytes, bytes]) -> str:
    raw = headers.get(b"cookie")
    if not raw:
        return ""
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw.decode("latin-1"))
    except Exception:  # noqa: BLE001 - a malformed Cookie header is "no session", never a 500
        return ""
    m = jar.get(COOKIE)
    return m.value if m is not None else ""


def _same_origin(headers: dict[bytes, bytes]) -> bool:
    """An Origin header, when the browser sends one, must be this node's own address."""
    origin = headers.get(b"origin")
    if origin is None:
        return True
    host = headers.get(b"host", b"")
    return hmac.compare_digest(origin, b"https://" + host)


def _error(status: int, error: str, field: str | None, hint: str | None) -> dict[str, Any]:
    return {"status": status, "body": {"error": error, "field": field, "hint": hint}}


class WebClient:
    """The sessions of one node and the check :class:`~qx_node.auth.BearerAuth` asks (``check``)."""

    def __init__(self, node: Node, web_dir: Path = WEB_DIR) -> None:
        self.node = node
        self.sessions = Sessions()
        self.files, hashes = _load(web_dir)
        self.csp = _csp(hashes).encode()

    # -- the API gate's question ------------------------------------------------------------------
    def session_of(self, scope: dict[str, Any], headers: dict[bytes, bytes]) -> Session | dict[str, Any] | None:
        """The live session of the request's cookie; None without a cookie; an error dict when refused."""
        sid = _cookie(headers)
        if not sid:
            return None
        s = self.sessions.lookup(sid)
        if s is None:
            return _error(401, "the session has ended (signed out, idle too long, or qx-node restarted)", "session",
                          "sign in again")
        if s.via == "password" and is_locked(lockdown_path(Request(scope))):
            self.sessions.end_password_sessions()
            return _error(401, "lockdown mode is on: password sessions have ended", "session",
                          "sign in with the API token, or turn lockdown mode off at the host's console")
        if scope.get("method", "GET") not in SAFE_METHODS:
            if not _same_origin(headers):
                return _error(403, "cross-origin request refused", "Origin",
                              "state-changing requests with the session cookie must come from the node's own page")
            if not csrf_ok(s, headers.get(CSRF_HEADER.encode(), b"").decode("latin-1")):
                return _error(403, "missing or wrong CSRF token", "X-CSRF-Token",
                              "send the token from POST /ui/login or GET /ui/session in the X-CSRF-Token header")
        if headers.get(BACKGROUND_HEADER.encode()) != b"1":
            self.sessions.touch(s)
        return s

    def check(self, scope: dict[str, Any]) -> bool | dict[str, Any] | None:
        """For BearerAuth (HTTP requests without Authorization): True to let in, an error dict to refuse
        with, None when there is no session cookie at all. WebSockets never use the cookie (tickets)."""
        if scope["type"] != "http":
            return None
        got = self.session_of(scope, _headers(scope))
        return got if got is None or isinstance(got, dict) else True


class UiFront:
    def __init__(self, app: Any, web: WebClient) -> None:
        self.app = app
        self.web = web

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        if path == "/":
            path = "/ui/index.html"
        if path == "/ui/login" and method == "POST":
            await self._login(scope, receive, send)
        elif path == "/ui/logout" and method == "POST":
            await self._logout(scope, send)
        elif path == "/ui/session" and method == "GET":
            await self._session(scope, send)
        elif path == "/ui" or path.startswith("/ui/"):
            await self._file(scope, path, send)
        else:
            await self.app(scope, receive, send)

    # -- answers ----------------------------------------------------------------------------------
    async def _send(self, send: Any, status: int, body: bytes, ctype: bytes,
                    extra: list[tuple[bytes, bytes]] | None = None) -> None:
        headers = [(b"content-type", ctype), (b"content-length", str(len(body)).encode()),
                   (b"content-security-policy", self.web.csp), *SECURITY_HEADERS, *(extra or [])]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _json(self, send: Any, status: int, doc: dict[str, Any],
                    extra: list[tuple[bytes, bytes]] | None = None) -> None:
        await self._send(send, status, json.dumps(doc).encode(), b"application/json",
                         [(b"cache-control", b"no-store"), *(extra or [])])

    async def _file(self, scope: dict[str, Any], path: str, send: Any) -> None:
        if path == "/ui" or path == "/ui/":
            path = "/ui/index.html"
        f = self.web.files.get(path)
        if f is None:
            await self._json(send, 404, _error(404, f"{path}: no such file of the web client", "path",
                                               "open / instead")["body"])
            return
        if scope["method"] not in ("GET", "HEAD"):
            await self._json(send, 405, _error(405, f"{path}: method {scope['method']} not allowed", "method",
                                               "the web client's files are read with GET")["body"],
                             [(b"allow", b"GET, HEAD")])
            return
        h = _headers(scope)
        cache = [(b"etag", f.etag.encode()), (b"cache-control", b"no-cache"), (b"vary", b"accept-encoding")]
        if h.get(b"if-none-match") == f.etag.encode():
            await send({"type": "http.response.start", "status": 304,
                        "headers": [*cache, (b"content-security-policy", self.web.csp), *SECURITY_HEADERS]})
            await send({"type": "http.response.body", "body": b""})
            return
        body, extra = f.body, cache
        if f.gz is not None and b"gzip" in h.get(b"accept-encoding", b""):
            body, extra = f.gz, [*cache, (b"content-encoding", b"gzip")]
        await self._send(send, 200, b"" if scope["method"] == "HEAD" else body, f.ctype.encode(), extra)

    @staticmethod
    def _set_cookie(value: str, max_age: int | None) -> tuple[bytes, bytes]:
        attrs = f"{COOKIE}={value}; Path=/; Secure; HttpOnly; SameSite=Strict"
        if max_age is not None:
            attrs += f"; Max-Age={max_age}"
        return b"set-cookie", attrs.encode()

    async def _login(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        web, headers = self.web, _headers(scope)
        source = (scope.get("client") or ("?", 0))[0]
        if not _same_origin(headers):
            await self._json(send, 403, _error(403, "cross-origin sign-in refused", "Origin",
                                                "sign in from the node's own page")["body"])
            return
        body = bytearray()
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if len(body) > MAX_LOGIN_BODY:
                await self._json(send, 413, _error(413, "body: too large for a sign-in", "body", None)["body"],
                                 [(b"connection", b"close")])
                return
            if not msg.get("more_body"):
                break
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        password = doc.get("password") if isinstance(doc, dict) else None
        token = doc.get("token") if isinstance(doc, dict) else None
        if not isinstance(doc, dict) or set(doc) - {"password", "token"} or (password is None) == (token is None) \
                or not isinstance(password or token, str):
            await self._json(send, 422, _error(422, "body: give exactly one of password or token (a string)", "body",
                                                '{"password": "..."} or {"token": "..."}')["body"])
            return
        if password is not None and is_locked(lockdown_path(Request(scope))):
            await self._json(send, 423, _error(423, "lockdown mode is on: password sign-in is disabled", "password",
                                                "sign in with the API token, or turn lockdown mode off at the "
                                                "host's console (F2 > Lockdown Mode)")["body"])
            return
        wait = web.sessions.throttle.check(source)
        if wait > 0:
            secs = int(wait) + 1
            await self._json(send, 429, _error(429, f"too many failed sign-ins: try again in {secs} s", "password"
                                                if password is not None else "token",
                                                "wait, then retry; every failure makes the wait longer")["body"],
                             [(b"retry-after", str(secs).encode())])
            return
        if password is not None:
            shadow = getattr(scope["app"].state, "shadow_file", None) or DEFAULT_SHADOW
            try:
                ok = await run_in_threadpool(verify, shadow, "root", password)
            except EnvironmentError_ as e:
                _log.error("web sign-in: %s", e.message)
                await self._json(send, 503, _error(503, f"the password cannot be checked: {e.message}", "password",
                                                    e.hint or "sign in with the API token")["body"])
                return
        else:
            ok = hmac.compare_digest(str(token).encode(), web.node.token.encode())
        via = "password" if password is not None else "token"
        if not ok:
            web.sessions.throttle.failed(source)
            _log.warning("web sign-in refused (%s) from %s", via, source)
            await self._json(send, 401, _error(401, f"wrong {'password' if via == 'password' else 'API token'}",
                                                via, "the root password of this host, or its API token")["body"])
            return
        web.sessions.throttle.succeeded(source)
        sid, s = web.sessions.create(via)
        _log.info("web sign-in (%s) from %s", via, source)
        await self._json(send, 200, {"signed_in": True, "csrf": s.csrf, "via": via, "idle_seconds": int(IDLE_SECONDS)},
                         [self._set_cookie(sid, None)])

    async def _logout(self, scope: dict[str, Any], send: Any) -> None:
        got = self.web.session_of(scope, _headers(scope))
        if got is None or isinstance(got, dict):
            err = got or _error(401, "not signed in", "session", "sign in first")
            # A refused sign-out (403: no CSRF token) leaves the cookie; an unknown session's is cleared.
            await self._json(send, err["status"], err["body"],
                             [self._set_cookie("", 0)] if err["status"] == 401 else [])
            return
        self.web.sessions.end(_cookie(_headers(scope)))
        await self._json(send, 200, {"signed_out": True}, [self._set_cookie("", 0)])

    async def _session(self, scope: dict[str, Any], send: Any) -> None:
        got = self.web.session_of(scope, _headers(scope))
        if got is None or isinstance(got, dict):
            # 200: "not signed in" is the expected answer of a fresh page, not an error to log in the browser
            await self._json(send, 200, {"signed_in": False, "reason": got["body"]["error"] if got else None})
            return
        await self._json(send, 200, {"signed_in": True, "csrf": got.csrf, "via": got.via,
                                     "idle_seconds": int(IDLE_SECONDS)})
