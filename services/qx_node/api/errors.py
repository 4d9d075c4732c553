"""Exception handlers: every failure becomes JSON ``{"error", "field", "hint"}`` with a fitting status.

Never a traceback to the client. An unexpected exception is logged with its traceback on the
server and answered with a 500 that names the exception type only — by :class:`CatchAll`
(api/guards.py), so the keep-alive connection survives it.

Request bodies are read only through :func:`json_body`: at most ``MAX_JSON_BODY`` bytes (the
:class:`~qx_node.api.guards.BodyLimit` middleware refuses larger ones before any byte is read),
nesting at most ``MAX_JSON_DEPTH`` deep, and no string or key may hold a lone surrogate (``"\\ud800"``
is valid JSON but not Unicode: libvirt, XML and file names cannot take it). Every response is
rendered by :class:`SafeJSONResponse`, which cannot fail on a string the client sent.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from qx_common import log
from qx_common.errors import QxError
from qx_node.errors import InvalidField, PayloadTooLarge, printable

_log = log.get("node.api")

MAX_JSON_BODY = 1024 * 1024  # bytes; a VM spec is a few KiB
MAX_JSON_DEPTH = 32


class SafeJSONResponse(JSONResponse):
    """JSON as UTF-8; a string that cannot be UTF-8 (a lone surrogate) is sent \\u-escaped."""

    def render(self, content: Any) -> bytes:
        text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()


def error_body(message: str, field: str | None = None, hint: str | None = None) -> dict[str, Any]:
    return {"error": message, "field": field, "hint": hint}


def error_response(status: int, message: str, field: str | None = None, hint: str | None = None,
                   headers: dict[str, str] | None = None) -> SafeJSONResponse:
    return SafeJSONResponse(error_body(message, field, hint), status_code=status, headers=headers)


def _loc(loc: Any) -> str:
    parts = [printable(p, 60) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def install(app: FastAPI) -> None:
    @app.exception_handler(QxError)
    async def _qx(_req: Request, e: QxError) -> JSONResponse:
        status = getattr(e, "status", 400 if e.exit_code == 2 else 502)
        # A body refused half-way may still be arriving: close rather than read it to the end.
        headers = {"connection": "close"} if status == 413 else None
        return error_response(status, e.message, getattr(e, "field", None), e.hint, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {"loc": ("body",), "msg": "invalid request"}
        field = _loc(first.get("loc", ()))
        return error_response(422, f"{field}: {printable(first.get('msg'), 200)}", field)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, e: StarletteHTTPException) -> JSONResponse:
        return error_response(e.status_code, printable(e.detail, 200), headers=e.headers)


def check_json_value(value: Any, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Refuse nesting deeper than ``max_depth`` and lone surrogates in strings and keys (iteratively:
    no recursion on client data)."""
    stack: list[tuple[Any, int, str]] = [(value, 1, "body")]
    while stack:
        v, depth, where = stack.pop()
        if isinstance(v, str):
            _check_text(v, where)
        elif isinstance(v, (dict, list)):
            if depth > max_depth:
                raise InvalidField(f"{where}: nested deeper than {max_depth} levels", field="body",
                                   hint="the API's documents are a few levels deep")
            if isinstance(v, dict):
                for k, item in v.items():
                    _check_text(k, where)
                    stack.append((item, depth + 1, f"{where}.{printable(k)}"))
            else:
                stack.extend((item, depth + 1, f"{where}[{i}]") for i, item in enumerate(v))


def _check_text(s: str, where: str) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidField(f"{where}: invalid Unicode (a lone surrogate \\u{ord(s[e.start]):04x})", field="body",
                           hint="send text as valid UTF-8; \\ud800-\\udfff escapes must come in pairs") from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"the key '{printable(k)}' appears twice in one object")
        out[k] = v
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    f = float(text)
    if f in (float("inf"), float("-inf")):
        raise ValueError(f"the number {printable(text)} is too large")
    return f


async def json_body(request: Request, limit: int = MAX_JSON_BODY) -> Any:
    """The request's JSON body: bounded in size (read as a stream, never more than ``limit`` bytes),
    depth and content."""
    length = request.headers.get("content-length")
    if length is not None and length.isascii() and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"body: {int(length)} bytes is more than the {limit} allowed", field="body")
    chunks = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"body: more than the {limit} bytes allowed", field="body")
            chunks.append(chunk)
    except ClientDisconnect:
        raise InvalidField("body: the client disconnected before sending it all", field="body") from None
    raw = b"".join(chunks)
    if not raw:
        raise InvalidField("body: is empty; a JSON object is required", field="body")
    try:
        value = json.loads(raw, object_pairs_hook=_no_duplicates, parse_constant=_no_constant,
                           parse_float=_finite)
    except RecursionError:
        raise InvalidField(f"body: nested deeper than {MAX_JSON_DEPTH} levels", field="body") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidField(f"body: not valid JSON ({printable(e, 120)})", field="body") from None
    check_json_value(value)
    return value
