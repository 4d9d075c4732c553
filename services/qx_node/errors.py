"""Errors of the node API, each with its HTTP status.

Every failure that reaches a client is one of these (the API maps them to a JSON body
``{"error": <message>, "field": <field or null>, "hint": <hint or null>}``). Foreign exceptions —
libvirt's, the OS's — are translated at the boundary by :func:`qx_node.libvirt_conn.translate`, so
the API layer never sees a ``libvirtError`` and never answers 500 with a traceback.
"""

from __future__ import annotations

from qx_common.errors import ExternalError, UserError


class ApiError(UserError):
    """A client-visible error. ``field`` names the part of the request at fault, when there is one."""

    status = 400

    def __init__(self, message: str, *, field: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.field = field


class InvalidField(ApiError):
    """The request is well-formed JSON but a field is wrong (422)."""

    status = 422


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    """The object exists already, or is in a state that forbids the operation (409)."""

    status = 409


class PayloadTooLarge(ApiError):
    status = 413


class Unavailable(ExternalError):
    """libvirtd (or another service we need) is not reachable right now (503)."""

    status = 503

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.field = None


class BackendError(ExternalError):
    """libvirt refused an operation for a reason that is not the client's fault (502)."""

    status = 502

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.field = None


def printable(value: object, limit: int = 40) -> str:
    """A client-supplied value for an error message: shortened, control characters and lone
    surrogates escaped, so the message is one line of valid Unicode."""
    s = str(value)
    if len(s) > limit:
        s = s[: limit - 3] + "..."
    out = []
    for ch in s:
        o = ord(ch)
        if o < 32 or o == 127 or 0xD800 <= o <= 0xDFFF:
            out.append(f"\\x{o:02x}" if o < 256 else f"\\u{o:04x}")
        else:
            out.append(ch)
    return "".join(out)
