"""Command line of qx-console."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from qx_common.cli import entry

DEFAULT_READY_DIR = Path("/run/quantix/console")


def _main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="qx-console", description="Quantix OS physical console")
    p.add_argument("--debug", action="store_true")
    p.add_argument("--tty", default=None, help="name of the terminal this console runs on (for readiness)")
    p.add_argument("--ready-dir", type=Path, default=DEFAULT_READY_DIR)
    args = p.parse_args(argv)

    tty = args.tty
    if tty is None:
        try:
            tty = os.path.basename(os.ttyname(2))
        except OSError:
            tty = None
    ready = args.ready_dir / f"{tty}.ready" if tty else None

    from qx_console.app import ConsoleApp

    ConsoleApp(ready_file=ready).run()
    return 0


main = entry(_main)
