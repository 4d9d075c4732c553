"""The console on a real terminal (a pseudo-terminal, TERM=linux, 80x24): the keys a terminal gives a
meaning of its own and the job-control signals neither end nor stop it.

Textual's driver runs here for real (raw mode, its own SIGTSTP handler), which ``run_test`` does not
exercise. The app is the real ConsoleApp on the in-memory host, started the way cli.py starts it.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path

import pytest

APP = """
import sys
from pathlib import Path
from qx_console.app import ConsoleApp
from qx_console.memory import MemoryBackend
app = ConsoleApp(MemoryBackend(), ready_file=Path(sys.argv[1]), refresh_s=3600)
app.run()
sys.exit(7)  # the app ended: what this test must never see
"""

# What a terminal sends for Ctrl+Q, Ctrl+C, Ctrl+Z, Ctrl+\, Ctrl+D (raw mode: bytes, not signals).
CONTROL_BYTES = b"\x11\x03\x1a\x1c\x04"
F2 = b"\x1bOQ"
SIGNALS = (signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU)


class Terminal:
    """A child process on a pty; :meth:`wait_for` drains its output (a full pty would block it)."""

    def __init__(self, argv: list[str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the console
            os.environ.update(TERM="linux", LANG="C.UTF-8", COLUMNS="80", LINES="24")
            for var in ("COLORTERM", "TEXTUAL_ALLOW_SIGNALS"):
                os.environ.pop(var, None)
            os.execv(argv[0], argv)
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        self.out = b""

    def drain(self, timeout: float) -> None:
        r, _, _ = select.select([self.fd], [], [], timeout)
        if r:
            try:
                self.out += os.read(self.fd, 65536)
            except OSError:
                pass

    def wait_for(self, cond: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise AssertionError(f"not reached; state {self.state()!r}; output tail {self.out[-400:]!r}")
            self.drain(0.05)

    def state(self) -> str:
        """The process state letter of /proc/PID/stat ('T' = stopped, 'Z' = ended, '' = gone)."""
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return ""
        return stat.rsplit(")", 1)[1].split()[0]

    def write(self, data: bytes) -> None:
        os.write(self.fd, data)

    def close(self) -> None:
        """SIGTERM (how systemd stops the service), then reap; SIGKILL only if it would not end."""
        if self.state() not in ("", "Z"):
            os.kill(self.pid, signal.SIGCONT)
            os.kill(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and os.waitpid(self.pid, os.WNOHANG) == (0, 0):
                self.drain(0.05)
            else:
                if self.state() not in ("", "Z"):
                    os.kill(self.pid, signal.SIGKILL)
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass
        os.close(self.fd)


@pytest.fixture
def console(tmp_path: Path):
    ready = tmp_path / "pty.ready"
    term = Terminal([sys.executable, "-c", APP, str(ready)])
    try:
        term.wait_for(ready.exists)
        term.wait_for(lambda: b"10.0.2.15" in term.out)
        yield term
    finally:
        term.close()


def test_control_keys_and_terminal_signals_neither_end_nor_stop_the_console(console: Terminal) -> None:
    console.write(CONTROL_BYTES)
    for sig in SIGNALS:
        os.kill(console.pid, sig)
    # Proof that all of it was received and survived: the console still answers F2 with its login.
    mark = len(console.out)
    console.write(F2)
    console.wait_for(lambda: b"root password" in console.out[mark:])
    assert console.state() not in ("T", "t", "Z", ""), console.state()
    assert os.waitpid(console.pid, os.WNOHANG) == (0, 0)
    assert b"quit" not in console.out.lower()


def test_input_that_is_not_utf8_neither_ends_the_console_nor_its_keyboard(console: Terminal) -> None:
    """Line noise on a serial console (a wrong speed, a Latin-1 terminal): Textual's input thread decoded
    strictly and one invalid byte ended the console with a panic. Now the read holding it is dropped
    (keys that came in the same read with it too: F2 is pressed until it is seen) and the keyboard
    works on."""
    console.write(b"\xff\xfe\xc3(\x80abc\xe9\xc0\xaf")
    mark = len(console.out)

    def login_shown() -> bool:
        if b"root password" not in console.out[mark:]:
            console.write(F2)
            console.drain(0.5)
        return b"root password" in console.out[mark:]

    console.wait_for(login_shown)
    console.write(b"quantix-pw\r")
    console.wait_for(lambda: b"System Customization" in console.out[mark:])
    assert os.waitpid(console.pid, os.WNOHANG) == (0, 0)

