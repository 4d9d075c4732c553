"""Exception handlers: every failure becomes JSON ``{"error", "field", "hint"}`` with a fitting status.

Never a traceback to the client. An unexpected exception is logged with its traceback on the
server and answered with a 500 that names the exception type only.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from qx_common import log
from qx_common.errors import QxError
from qx_node.errors import InvalidField

_log = log.get("node.api")


def error_body(message: str, field: str | None = None, hint: str | None = None) -> dict[str, Any]:
    return {"error": message, "field": field, "hint": hint}


def _loc(loc: Any) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def install(app: FastAPI) -> None:
    @app.exception_handler(QxError)
    async def _qx(_req: Request, e: QxError) -> JSONResponse:
        status = getattr(e, "status", 400 if e.exit_code == 2 else 502)
        return JSONResponse(error_body(e.message, getattr(e, "field", None), e.hint), status_code=status)

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {"loc": ("body",), "msg": "invalid request"}
        field = _loc(first.get("loc", ()))
        return JSONResponse(error_body(f"{field}: {first.get('msg')}", field), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, e: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(error_body(str(e.detail)), status_code=e.status_code, headers=e.headers)

    @app.exception_handler(Exception)
    async def _bug(req: Request, e: Exception) -> JSONResponse:
        _log.error("internal error on %s %s", req.method, req.url.path, exc_info=e)
        return JSONResponse(error_body(f"internal error ({type(e).__name__}); see the node's log"),
                            status_code=500)


async def json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        raise InvalidField("body: is empty; a JSON object is required", field="body")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidField(f"body: not valid JSON ({e})", field="body") from e
