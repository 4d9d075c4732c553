"""Command line of qx-console.

Which app runs: the installer (:class:`qx_console.installer.InstallerApp`) with ``--installer`` — the
live ISO's units pass it — or when the kernel command line says ``quantix.live=1`` (the live system,
whatever started the console) and ``--demo`` was not given; otherwise the status console
(:class:`qx_console.app.ConsoleApp`). Choosing "Live: try without installing" in the installer ends it
with :data:`qx_console.installer.LIVE`, and the status console of the live system starts in its place.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from qx_common import hostpaths
from qx_common.cli import entry
from qx_common.errors import UserError
from qx_console.memory import DEMO_PASSWORD

DEFAULT_READY_DIR = hostpaths.CONSOLE_READY_DIR
LIVE_FLAG = "quantix.live=1"
LIVE_BANNER = "LIVE SYSTEM - changes are lost at reboot"


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


def live_system(root: Path) -> bool:
    """Is ``root`` the live ISO's system (``quantix.live=1`` on its kernel command line)?"""
    try:
        return LIVE_FLAG in (root / "proc/cmdline").read_text().split()
    except OSError:
        return False


def wants_installer(args: argparse.Namespace) -> bool:
    """The installer for ``--installer``, or on the live system unless this is a demo."""
    if args.installer and args.demo:
        raise UserError("--installer cannot be combined with --demo",
                        hint="the installer writes real disks; --demo runs the status console only")
    return bool(args.installer) or (not args.demo and live_system(args.root))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qx-console", description="Quantix OS physical console")
    p.add_argument("--debug", action="store_true")
    p.add_argument("--tty", default=None, help="name of the terminal this console runs on (for readiness)")
    p.add_argument("--ready-dir", type=Path, default=DEFAULT_READY_DIR)
    p.add_argument("--serial", action="store_true", help="running on a serial line (80x24 if size unknown)")
    p.add_argument("--root", type=Path, default=Path("/"), help="host root directory (for tests)")
    p.add_argument("--demo", action="store_true",
                   help="run against a built-in demo host: changes nothing and writes no file (no readiness "
                        f"file either); its root password is '{DEMO_PASSWORD}'")
    p.add_argument("--installer", action="store_true",
                   help="run the installer (the live ISO does; also the default when the kernel command line "
                        f"has {LIVE_FLAG})")
    p.add_argument("--media", type=Path, action="append", default=None, metavar="DIR",
                   help="installer: where to look for the installation payload (repeatable; default: the ISO)")
    p.add_argument("--disk", action="append", default=None, metavar="DEV",
                   help="installer: offer only this disk (repeatable; default: every disk of the machine)")
    return p


def _main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    installer = wants_installer(args)
    if args.serial:
        _ensure_window_size()

    tty = args.tty
    if tty is None:
        try:
            tty = os.path.basename(os.ttyname(2))
        except OSError:
            tty = None
    # A demo is not a console of this host: it must not tell qx-node's health that one is ready, and
    # it writes nothing at all.
    ready = args.ready_dir / f"{tty}.ready" if tty and not args.demo else None

    from qx_console.backend import HostBackend

    backend: HostBackend
    if args.demo:
        from qx_console.memory import MemoryBackend
        backend = MemoryBackend()
    else:
        from qx_console.linux import LinuxBackend
        backend = LinuxBackend(args.root)

    if installer:
        from qx_console.installer import LIVE, InstallerApp

        inst = InstallerApp(backend, media_dirs=args.media, only_disks=args.disk, ready_file=ready)
        inst.run()
        if inst.return_value != LIVE:
            # The installer has no quit key: only a crash ends it. Non-zero so systemd restarts it.
            return inst.return_code or 1

    from qx_console.app import ConsoleApp

    # The live ISO's system keeps nothing: every screen says so.
    app = ConsoleApp(backend, ready_file=ready, banner=LIVE_BANNER if live_system(args.root) else "")
    app.run()
    # Only a crash ends the app (there is no quit key): exit non-zero so systemd restarts us.
    return app.return_code or 0


main = entry(_main)
