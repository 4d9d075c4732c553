"""The one top-level handler of every Quantix command.

``main_wrapper(fn)`` runs ``fn(argv)`` and maps our errors to exit codes with a one-line message on
stderr (``error: …`` and ``hint: …``). Tracebacks are shown only with ``--debug`` or ``QX_DEBUG=1``.
An unexpected exception is a bug: it is reported as such, with exit code 70.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Sequence

from qx_common import log
from qx_common.errors import InternalError, QxError


def _debug_requested(argv: Sequence[str]) -> bool:
    return "--debug" in argv or bool(os.environ.get("QX_DEBUG"))


def main_wrapper(fn: Callable[[list[str]], int | None], argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_requested(args)
    log.setup(debug)
    prog = os.path.basename(sys.argv[0]) or "qx"
    try:
        rc = fn(args)
        return int(rc or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except QxError as e:
        if debug:
            traceback.print_exc()
        print(f"{prog}: error: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"{prog}: hint: {e.hint}", file=sys.stderr)
        return e.exit_code
    except Exception as e:  # noqa: BLE001 - the one place that turns a bug into an exit code
        if debug:
            traceback.print_exc()
        print(f"{prog}: internal error (a bug in Quantix): {type(e).__name__}: {e}", file=sys.stderr)
        print(f"{prog}: hint: run again with --debug for the traceback and report it", file=sys.stderr)
        return InternalError.exit_code


def entry(fn: Callable[[list[str]], int | None]) -> Callable[[], None]:
    """Turn ``fn(argv) -> rc`` into a console-script entry point."""

    def _main() -> None:
        sys.exit(main_wrapper(fn))

    return _main
