"""Command line of qx-console."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from qx_common.cli import entry

DEFAULT_READY_DIR = Path("/run/quantix/console")


def _ensure_window_size(cols: int = 80, rows: int = 24) -> None:
    """A serial line reports a 0x0 window; Textual needs a size, so assume the classic 80x24."""
    import fcntl
    import struct
    import termios

    for fd in (0, 1, 2):
        try:
            r, c, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
            if r == 0 or c == 0:
                fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
            return
        except OSError:
            continue


def _main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="qx-console", description="Quantix OS physical console")
    p.add_argument("--debug", action="store_true")
    p.add_argument("--tty", default=None, help="name of the terminal this console runs on (for readiness)")
    p.add_argument("--ready-dir", type=Path, default=DEFAULT_READY_DIR)
    p.add_argument("--serial", action="store_true", help="running on a serial line (80x24 if size unknown)")
    p.add_argument("--root", type=Path, default=Path("/"), help="host root directory (for tests)")
    p.add_argument("--demo", action="store_true", help="run against a built-in demo host (changes nothing)")
    args = p.parse_args(argv)
    if args.serial:
        _ensure_window_size()

    tty = args.tty
    if tty is None:
        try:
            tty = os.path.basename(os.ttyname(2))
        except OSError:
            tty = None
    ready = args.ready_dir / f"{tty}.ready" if tty else None

    from qx_console.app import ConsoleApp
    from qx_console.backend import HostBackend

    backend: HostBackend
    if args.demo:
        from qx_console.memory import MemoryBackend
        backend = MemoryBackend()
    else:
        from qx_console.linux import LinuxBackend
        backend = LinuxBackend(args.root)
    app = ConsoleApp(backend, ready_file=ready)
    app.run()
    # Only a crash ends the app (there is no quit key): exit non-zero so systemd restarts us.
    return app.return_code or 0


main = entry(_main)
