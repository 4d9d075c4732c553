"""One error shape for every response the server sends: ``{"error": str, "field": str|null, "hint": str|null}``.

Statuses come from the exception's *class* through :data:`STATUS` (most specific class first), in
:func:`status_of` — the one place that decides. That covers our own errors raised by routes and by the
repository, FastAPI's request validation (422), Starlette's 404/405 for unknown paths and methods, the
raw-ASGI guards (401/403/411/413, which run before routing and call :func:`send_error`), and any
unexpected exception (500, logged with its traceback, answered with the exception's type only).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from qx_common import log
from qx_common.errors import EnvironmentError_, ExternalError, QxError, UserError
from qx_update_server.errors import Forbidden, LengthRequired, NotFound, PayloadTooLarge, Unauthorized

_log = log.get("update_server.api")

# Order matters: the first class an error is an instance of wins (subclasses before their bases).
STATUS: tuple[tuple[type[QxError], int], ...] = (
    (NotFound, 404),
    (Unauthorized, 401),
    (Forbidden, 403),
    (LengthRequired, 411),
    (PayloadTooLarge, 413),
    (UserError, 400),
    (EnvironmentError_, 503),  # the database is down, the data directory is damaged: not the client's fault
    (ExternalError, 502),
)


def status_of(e: QxError) -> int:
    for cls, status in STATUS:
        if isinstance(e, cls):
            return status
    return 500


def error_body(message: str, field: str | None = None, hint: str | None = None) -> dict[str, Any]:
    return {"error": message, "field": field, "hint": hint}


def error_response(e: QxError, headers: dict[str, str] | None = None) -> JSONResponse:
    status = status_of(e)
    if status == 401:
        headers = {"WWW-Authenticate": "Bearer", **(headers or {})}
    if status == 413:  # the refused body may still be arriving: close rather than read it to the end
        headers = {"Connection": "close", **(headers or {})}
    return JSONResponse(error_body(e.message, getattr(e, "field", None), e.hint), status_code=status,
                        headers=headers)


async def send_error(scope: Scope, receive: Receive, send: Send, e: QxError) -> None:
    """Answer from a raw ASGI middleware (outside FastAPI's exception handlers) in the same shape."""
    await error_response(e)(scope, receive, send)


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def install(app: FastAPI) -> None:
    """Register the handlers that give every error of ``app`` the one shape."""

    @app.exception_handler(QxError)
    async def _qx(_: Request, e: QxError) -> JSONResponse:
        return error_response(e)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, e: RequestValidationError) -> JSONResponse:
        errors = e.errors()
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
        field = _field(first.get("loc", ()))
        msg = str(first.get("msg", "invalid"))[:200]
        return JSONResponse(error_body(f"{field}: {msg}", field, "see docs/update-format.md section 2.2"),
                            status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException) -> JSONResponse:
        # Raised by the framework itself only: unknown paths (404), methods (405), static files, and a body
        # that is not JSON at all (400: invalid UTF-8, say).
        hint = {400: "send the body as JSON in UTF-8, with Content-Type: application/json",
                404: "see docs/update-format.md section 2.2 for the server's paths",
                405: "see docs/update-format.md section 2.2 for each path's method"}.get(e.status_code)
        message = f"{request.method} {request.url.path}: {str(e.detail)[:200]}"
        return JSONResponse(error_body(message, None, hint), status_code=e.status_code, headers=e.headers)

    @app.exception_handler(Exception)
    async def _bug(request: Request, e: Exception) -> JSONResponse:
        _log.error("internal error in %s %s", request.method, request.url.path, exc_info=e)
        return JSONResponse(error_body(f"internal error ({type(e).__name__})", None,
                                       "this is a bug in qx-update-server; its log has the details"),
                            status_code=500)
