"""Request guards every route gets, so that none can forget them.

* :class:`CatchAll` (ASGI, outermost of ours): an unexpected exception becomes a logged 500
  ``{"error", "field", "hint"}`` and the keep-alive connection stays usable. (Starlette's own
  last-resort handler re-raises after answering, and uvicorn then drops the connection.)
* :class:`BodyLimit` (ASGI): a body larger than ``limit`` bytes is refused with 413 before the
  application reads a byte of it (``Content-Length``) or as soon as a chunked body passes the limit.
  Streaming uploads (``is_upload``) have their own limit: the pool's free space.
* :func:`reject_unknown_query` (an app-wide dependency): a query parameter the route does not
  declare, or one given twice, is a 422 naming it — a mistyped ``remove_disks`` must not be ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import HTTPConnection

from qx_common import log
from qx_node.api.errors import error_response, printable
from qx_node.errors import InvalidField, PayloadTooLarge

_log = log.get("node.api")


class CatchAll:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as e:  # noqa: BLE001 - the last resort: log it, answer, keep the connection
            _log.error("internal error on %s %s", scope.get("method"), scope.get("path"), exc_info=e)
            if started:
                raise  # half a response is out: only closing the connection can tell the client
            await error_response(500, f"internal error ({type(e).__name__}); see the node's log")(
                scope, receive, send)


def _content_length(scope: dict[str, Any]) -> int | None:
    for k, v in scope.get("headers", ()):
        if k == b"content-length":
            try:
                return int(v)
            except ValueError:
                return None
    return None


class BodyLimit:
    def __init__(self, app: Any, limit: int, is_upload: Callable[[dict[str, Any]], bool]) -> None:
        self.app = app
        self.limit = limit
        self.is_upload = is_upload

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self.is_upload(scope):
            await self.app(scope, receive, send)
            return
        limit = self.limit
        length = _content_length(scope)
        if length is not None and length > limit:
            # Answered without reading the body; the connection is closed after it (the unread
            # body would otherwise have to be received and thrown away).
            await error_response(413, f"body: {length} bytes is more than the {limit} allowed", "body",
                                 "request bodies of this API are small JSON documents; ISOs go to "
                                 "PUT /v1/storage/isos/{name}", headers={"connection": "close"})(scope, receive, send)
            return
        total = 0

        async def limited_receive() -> dict[str, Any]:
            nonlocal total
            message = await receive()
            if message["type"] == "http.request":
                total += len(message.get("body", b""))
                if total > limit:
                    raise PayloadTooLarge(f"body: more than the {limit} bytes allowed", field="body")
            return message  # type: ignore[no-any-return]

        await self.app(scope, limited_receive, send)


_QUERY_CACHE: dict[int, frozenset[str]] = {}


def _declared_query(route: Any) -> frozenset[str]:
    key = id(route)
    got = _QUERY_CACHE.get(key)
    if got is None:
        names: set[str] = set()
        todo = [getattr(route, "dependant", None)]
        while todo:
            d = todo.pop()
            if d is None:
                continue
            names.update(f.alias for f in d.query_params)
            todo.extend(d.dependencies)
        got = _QUERY_CACHE[key] = frozenset(names)
    return got


async def reject_unknown_query(request: HTTPConnection) -> None:
    """(async: no worker thread per request; HTTPConnection: WebSocket routes get it too)"""
    if not request.scope.get("query_string"):
        return
    allowed = _declared_query(request.scope.get("route"))
    seen: set[str] = set()
    for key, _value in request.query_params.multi_items():
        shown = printable(key) if key else '""'
        if key not in allowed:
            hint = ("allowed: " + ", ".join(sorted(allowed))) if allowed else "this route takes no query parameters"
            raise InvalidField(f"{shown}: unknown query parameter", field=shown, hint=hint)
        if key in seen:
            raise InvalidField(f"{shown}: given more than once", field=shown, hint="give each parameter once")
        seen.add(key)
