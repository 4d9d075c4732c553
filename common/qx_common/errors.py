"""Exceptions of Quantix OS, grouped by where the fault lies.

* :class:`UserError` — bad input from the operator (a flag, an answer file, an API body). The message
  names the field; ``hint`` says how to fix it. Exit code 2.
* :class:`EnvironmentError_` — the machine is not as needed (a missing tool, no root, no loop device,
  an unreachable mirror). Exit code 3.
* :class:`ExternalError` — a command or remote service we depend on failed. Exit code 4.
* :class:`InternalError` — our own bug. Exit code 70 (EX_SOFTWARE).

Each package's own errors subclass one of these — one tree, so :func:`qx_common.cli.main_wrapper` maps
every one to its exit code: ``qx_node.errors`` (API errors by HTTP status), ``qx_update.errors``
(:class:`VerificationError`, an ExternalError with exit code 5: a refused release),
``qx_update_server.errors``, ``qx_console.backend.BackendUnavailable``, ``qx_install.engine.InstallError``.

Foreign exceptions are wrapped at the boundary with ``raise SomeQxError(...) from e``, so the cause is
kept for ``--debug`` but never shown to an operator as a traceback.
"""

from __future__ import annotations


class QxError(Exception):
    """Base of every error Quantix raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UserError(QxError):
    """The input was wrong; the message names the field, the hint the fix."""

    exit_code = 2


class EnvironmentError_(QxError):  # noqa: N801 - avoid shadowing the builtin EnvironmentError
    """The machine lacks something we need (tool, privilege, device, network)."""

    exit_code = 3


class ExternalError(QxError):
    """An external command or service failed."""

    exit_code = 4


class InternalError(QxError):
    """A bug in Quantix itself."""

    exit_code = 70

