"""What runs before any route: authentication, scopes, body limits, the listener split, security headers.

Order of checks for every request, before any body byte is read (so no request — however large, with
any token or none — is parsed before it is known to be allowed and small enough):

1. :class:`~qx_update_server.metadata_http.MetadataFastPath` answers ``GET /metadata/…`` from memory;
2. :class:`ListenerSplit` (only with ``--admin-listen``): the public listener serves only what hosts use;
3. :class:`AuthMiddleware` *denies by default*: only :func:`is_public` paths pass without a valid token
   (401), so a route added later cannot forget authentication; then the route's scope from
   :data:`ROUTE_SCOPES` (403); then the body: JSON bodies at most :data:`MAX_JSON_BODY` bytes with a
   Content-Length (413/411). Upload bodies are streamed by their route with their own limit.

Every refusal is a typed error from :mod:`qx_update_server.errors`, answered by
:func:`~qx_update_server.api.errors.send_error` in the one error shape.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import anyio.to_thread
from fastapi import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from qx_common import log
from qx_common.errors import QxError
from qx_update_server.api.errors import send_error
from qx_update_server.errors import Forbidden, LengthRequired, NotFound, PayloadTooLarge, RequestError, Unauthorized
from qx_update_server.storage import Storage, Token

_log = log.get("update_server.api")

PUBLIC_PREFIXES = ("/metadata/", "/targets/", "/admin/static/")
PUBLIC_PATHS = frozenset({"/healthz", "/admin", "/admin/"})
# What the public listener serves when the admin API has its own (--admin-listen).
PUBLIC_LISTENER_PREFIXES = ("/metadata/", "/targets/")
PUBLIC_LISTENER_PATHS = frozenset({"/healthz", "/v1/checkin"})

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
        ("POST", r"/v1/keys/root", "keys"),
        ("GET", r"/v1/keys/status", "read"),
        ("POST", r"/v1/checkin", "checkin"),
        ("GET", r"/v1/fleet", "read"),
        ("GET", r"/v1/audit", "read"),
        ("GET", r"/v1/tokens", "tokens"),
        ("POST", r"/v1/tokens", "tokens"),
        ("POST", rf"/v1/tokens/{_SEG}/revoke", "tokens"),
    ))
_STREAMED = re.compile(rf"/v1/uploads/{_SEG}/{_SEG}")  # PUT: the handler streams it with its own limit


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def route_scope(method: str, path: str) -> str | None:
    for m, pattern, scope in ROUTE_SCOPES:
        if (m == method or method == "HEAD" and m == "GET") and pattern.fullmatch(path):
            return scope
    return None


def _missing_scope(scope_name: str) -> Forbidden:
    return Forbidden(f"this token lacks the {scope_name!r} scope", field="Authorization",
                     hint=f"ask for a token with the {scope_name!r} scope (qx-update-server token create --scopes ...)")


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


class AuthMiddleware:
    """Deny by default: a request to a non-public path without a known bearer token gets 401."""

    def __init__(self, app: ASGIApp, storage: Storage) -> None:
        self.app = app
        self.storage = storage

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        try:
            token = await self._token(scope)
            self._check(scope, token)
        except QxError as e:  # typed: 401/403/411/413 from the checks, 503 when the database is down
            await send_error(scope, receive, send, e)
            return
        scope.setdefault("state", {})["token"] = token
        await self.app(scope, receive, send)

    async def _token(self, scope: Scope) -> Token:
        for k, v in scope["headers"]:
            if k == b"authorization":
                kind, _, secret = v.decode("latin-1").partition(" ")
                if kind.lower() == "bearer" and secret:
                    # In a thread: with PostgreSQL the lookup is a network round trip. A database that is
                    # unreachable raises EnvironmentError_ (503: say so, not "bad token").
                    token = await anyio.to_thread.run_sync(self.storage.lookup_token, secret.strip())
                    if token is not None:
                        return token
        raise Unauthorized("a valid API token is required", field="Authorization",
                           hint="send Authorization: Bearer <token> (qx-update-server token create)")

    @staticmethod
    def _check(scope: Scope, token: Token) -> None:
        method, path = scope["method"], scope["path"]
        needed = route_scope(method, path)
        if needed is not None and needed not in token.scopes:
            raise _missing_scope(needed)
        if method == "PUT" and _STREAMED.fullmatch(path):
            return
        headers = dict(scope["headers"])
        if b"transfer-encoding" in headers:
            raise LengthRequired("a request body needs a Content-Length", field="Content-Length",
                                 hint="send the JSON body with a Content-Length header (not chunked)")
        length = headers.get(b"content-length", b"0")
        if not length.isdigit():
            raise RequestError("Content-Length is not a byte count", field="Content-Length")
        if int(length) > MAX_JSON_BODY:
            raise PayloadTooLarge(f"request body of {int(length)} bytes is over the limit of {MAX_JSON_BODY}",
                                  field="body", hint="API bodies are small JSON documents; release files go to "
                                                     "PUT /v1/uploads/<id>/<file>")


def need(scope_name: str) -> Callable[[Request], Token]:
    """A route dependency: the request's token (set by AuthMiddleware), which must have ``scope_name``."""
    def dep(request: Request) -> Token:
        token: Token = request.state.token
        if scope_name not in token.scopes:
            raise _missing_scope(scope_name)
        return token
    return dep


class ListenerSplit:
    """With a separate admin listener, the public one serves only what hosts use.

    ``qx-update-server serve --listen PUBLIC --admin-listen ADMIN``: requests that arrive on any socket
    but ``admin_address`` may reach only the repository, the health check and host check-ins; the admin
    API and the admin page answer 404 there. So the public port can face the internet while the admin
    one stays on an internal network. ``admin_address`` is ``scope["server"]`` of the admin listener's
    requests: under :mod:`qx_update_server.serving` the backend Unix socket that listener forwards to,
    ``(path, None)``.
    """

    def __init__(self, app: ASGIApp, admin_address: tuple[str, int | None]) -> None:
        self.app = app
        self.admin_address = admin_address

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and tuple(scope.get("server") or ())[:2] != self.admin_address:
            path = scope["path"]
            if not (path.startswith(PUBLIC_LISTENER_PREFIXES) or path in PUBLIC_LISTENER_PATHS):
                await send_error(scope, receive, send, NotFound(
                    f"{path} is not served on the public listener",
                    hint="the admin API and page are on the server's --admin-listen address"))
                return
        await self.app(scope, receive, send)
