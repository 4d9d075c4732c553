"""The e2e harness's guest waits end at once when the guest crashed (tests/e2e/guest.py).

No QEMU here: the serial and agent logs are files the test writes, as QEMU would, and no process runs
(``BootedGuest.proc`` stays None), so only the log reading is exercised.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.e2e.guest import BootedGuest


def _guest(tmp_path: Path, **kw: object) -> BootedGuest:
    g = BootedGuest(tmp_path, disk=tmp_path / "disk.raw", **kw)  # type: ignore[arg-type]
    g.serial.write_bytes(b"")
    g.agent.write_bytes(b"")
    return g


@pytest.mark.parametrize("message", [b"Kernel panic - not syncing: VFS: Unable to mount root fs",
                                     b"You are in emergency mode. After logging in, type",
                                     b"Entering emergency mode. Exit the shell to continue."])
def test_a_wait_on_the_agent_ends_when_the_console_shows_a_crash(tmp_path: Path, message: bytes) -> None:
    g = _guest(tmp_path)
    # A large log first (the console's TUI), then the crash split over two writes.
    g.serial.write_bytes(b"\x1b[2J" + b"x" * 300_000 + b"\r\n[   12.3] " + message[:10])
    with g.serial.open("ab") as f:
        f.write(message[10:] + b"\r\n")
    started = time.monotonic()
    with pytest.raises(AssertionError, match="the guest crashed"):
        g.wait_for(r"QX-E2E boot", 600, agent=True)
    assert time.monotonic() - started < 30   # not the 600 s timeout


def test_the_crash_is_found_when_it_arrives_during_the_wait(tmp_path: Path) -> None:
    g = _guest(tmp_path)
    g.serial.write_bytes(b"booting\n" * 1000)
    with pytest.raises(AssertionError, match="/never/ did not appear"):
        g.wait_for("never", 1.5)   # nothing crashed yet: the ordinary timeout
    with g.serial.open("ab") as f:
        f.write(b"Kernel panic - not syncing: Attempted to kill init!\n")
    with pytest.raises(AssertionError, match="Kernel panic - not syncing"):
        g.wait_for("never", 600)


def test_a_test_that_expects_the_crash_can_wait_through_it(tmp_path: Path) -> None:
    g = _guest(tmp_path, crash=None)
    g.serial.write_bytes(b"Kernel panic - not syncing: on purpose\nrebooting\nlogin: ")
    assert g.wait_for("login: ", 5).group(0) == "login: "
