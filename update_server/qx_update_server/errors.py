"""The update server's typed errors: the class says what went wrong, and so which HTTP status it is.

Every error a client of the HTTP API sees is one of :mod:`qx_common.errors`' classes (or a subclass
below). :func:`qx_update_server.api.errors.status_of` maps *classes* to status codes in one table —
never an error's text — and every response body has the one shape ``{"error", "field", "hint"}``.

``field`` names the part of the request at fault (a JSON key, a path parameter, a header) when there
is one. The subclasses are also :class:`UserError`, so the CLIs that call the same code (``qx-release``
through the API, ``qx-update-server`` directly) still exit 2 with the message and hint.
"""

from __future__ import annotations

from qx_common.errors import UserError


class RequestError(UserError):
    """A request the server refuses; ``field`` names the part of it at fault (or None)."""

    def __init__(self, message: str, *, field: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.field = field


class NotFound(RequestError):
    """The release, upload or path named does not exist (404)."""


class Unauthorized(RequestError):
    """No valid API token came with a request that needs one (401)."""


class Forbidden(RequestError):
    """The token is valid but may not do this: a missing scope, another host's identity (403)."""


class LengthRequired(RequestError):
    """A JSON body without a Content-Length (411): its size must be known before it is read."""


class PayloadTooLarge(RequestError):
    """A body over its limit (413), refused before or while it is read."""
