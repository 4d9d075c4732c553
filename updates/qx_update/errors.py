"""qx-update's own error kind: a release or metadata that failed verification (an attack or corruption).

Refusals are :class:`VerificationError` (exit code 5), so scripts and the timer can tell "the server
offered something we must not install" from "the network is down" (:class:`ExternalError`, 4).
"""

from __future__ import annotations

from qx_common.errors import ExternalError


class VerificationError(ExternalError):
    """Metadata or an artifact failed TUF or slot verification, or (Secure Boot on) the release's UKI does
    not verify against the host's certificate (:mod:`qx_update.secureboot`); nothing was installed."""

    exit_code = 5
