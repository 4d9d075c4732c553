"""The API token: created on first start, 0600 root, compared in constant time, replaced only by
:meth:`ApiToken.rotate` (``POST /v1/host/api-token/rotate``).

``ensure_token(path)`` returns the token, creating it atomically (temp file + fsync + rename,
mode 0600 from the start) on first start. ``BearerAuth`` is a pure ASGI middleware: every HTTP
request except ``GET /health`` and every WebSocket handshake needs ``Authorization: Bearer
<token>``, so a route added later cannot forget authentication (tests enumerate the routes to
prove it). A refused WebSocket handshake is answered 401 with the JSON error body (or closed with
1008 by a server without the ASGI ``websocket.http.response`` extension); the application never
sees it. Only ``lifespan`` passes unchecked, and — through ``admit`` — a console WebSocket
handshake that presents a valid one-time ticket (browsers cannot send the header there) — and,
through ``session``, an HTTP request without the header that carries the web client's session cookie
(:meth:`qx_node.api.ui.WebClient.check`: the cookie, the CSRF token and the idle expiry are checked
there; it answers True, None for "no cookie", or the error to refuse with).
"""

from __future__ import annotations

import hmac
import json
import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qx_common.errors import EnvironmentError_
from qx_common.fs import atomic_write


PUBLIC_PATHS = frozenset({"/health"})


def ensure_token(path: Path) -> str:
    try:
        token = path.read_text().strip()
        if token:
            return token
    except FileNotFoundError:
        pass
    except OSError as e:
        raise EnvironmentError_(f"cannot read the API token {path}: {e.strerror}") from e
    token = secrets.token_urlsafe(32)
    try:
        atomic_write(path, (token + "\n").encode(), 0o600)
    except OSError as e:
        raise EnvironmentError_(f"cannot write the API token {path}: {e.strerror}",
                                hint="qx-node needs a writable --state-dir") from e
    return token


class ApiToken:
    """The node's token, in memory and in its file. :meth:`rotate` makes a new one: the file is replaced
    first (atomically, 0600), then the value in memory, so that a failed write leaves the old token
    working everywhere; from the swap on, the old token is refused. Readers of the file (the console)
    see the new one at their next read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._value = ensure_token(path)
        self._lock = threading.Lock()

    @property
    def value(self) -> str:
        return self._value

    def rotate(self) -> str:
        new = secrets.token_urlsafe(32)
        with self._lock:
            try:
                atomic_write(self.path, (new + "\n").encode(), 0o600)
            except OSError as e:
                raise EnvironmentError_(f"cannot write the new API token {self.path}: {e.strerror}",
                                        hint="the old token still works; qx-node needs a writable --state-dir") from e
            self._value = new
        return new


class BearerAuth:
    """``admit(scope)``, when given, may let a request in without the token: the console's one-time
    WebSocket tickets (:meth:`qx_node.console.Tickets.admit`)."""

    def __init__(self, app: Any, token: ApiToken, admit: Callable[[dict[str, Any]], bool] | None = None,
                 session: Callable[[dict[str, Any]], bool | dict[str, Any] | None] | None = None) -> None:
        self.app = app
        self._token = token  # read at every request: a rotated token takes effect at once
        self._admit = admit
        self._session = session

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "lifespan" or (kind == "http" and scope["path"] in PUBLIC_PATHS):
            await self.app(scope, receive, send)
            return
        got = b""
        for k, v in scope.get("headers", []):
            if k == b"authorization":
                got = v
                break
        if hmac.compare_digest(got, f"Bearer {self._token.value}".encode()) or (not got and self._admit is not None and self._admit(scope)):
            await self.app(scope, receive, send)
            return
        status, error = 401, {"error": "missing or wrong API token", "field": "Authorization",
                              "hint": "send 'Authorization: Bearer <token>' (the token is in the node's api-token file)"}
        verdict = self._session(scope) if not got and self._session is not None else None
        if verdict is True:
            await self.app(scope, receive, send)
            return
        if isinstance(verdict, dict):
            status, error = verdict["status"], verdict["body"]
        body = json.dumps(error).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"www-authenticate", b'Bearer realm="qx-node"')]
        if kind == "http":
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        elif kind == "websocket":
            if "websocket.http.response" in scope.get("extensions", {}):
                await send({"type": "websocket.http.response.start", "status": 401, "headers": headers})
                await send({"type": "websocket.http.response.body", "body": body})
            else:
                await send({"type": "websocket.close", "code": 1008, "reason": "missing or wrong API token"})
        # Any other (future) scope type is refused by not being passed on.
