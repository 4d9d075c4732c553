"""A booted Quantix guest under test: QEMU with its serial console logged to a file.

``BootedGuest.wait_for(pattern, timeout)`` polls the serial log (no fixed sleeps). On failure the
assertion message carries the tail of the serial log, so CI output shows what the guest said.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from qx_build import qemu

TAIL_LINES = 60
# What a guest prints when it cannot go on by itself (a panic reboots after panic=30 into the same
# failure; emergency mode waits for a root password nobody types): any wait ends at once, instead of at
# its timeout (up to an hour of CI) — unless the test expects it (BootedGuest(crash=None)).
GUEST_CRASHED = rb"Kernel panic - not syncing|You are in emergency mode|Entering emergency mode"


def _clean(text: str) -> str:
    # Drop terminal escape sequences (the console TUI shares the serial line) for readable tails.
    text = re.sub(r"\x1b\[[0-9;?=]*[A-Za-z]", "", text)
    text = re.sub(r"\x1b[()][A-Za-z0-9]", "", text)
    return text.replace("\r", "")


# A second virtio NIC at PCI slot 9 (the guest's enp0s9) on a user network of its own (nothing leaves
# it): a second management adapter for a team (bond) with the first.
SECOND_NIC = ["-netdev", "user,id=net1,restrict=on", "-device", "virtio-net-pci,netdev=net1,addr=0x9"]
SECOND_GUEST_NIC = "enp0s9"


class BootedGuest:
    def __init__(self, workdir: Path, *, disk: Path | None = None, iso: Path | None = None,
                 usb: Path | None = None, memory_mb: int = 2048, guest_services: list[tuple[int, str]] | None = None,
                 drives: list[tuple[Path, str, str]] | None = None, interactive: bool = False,
                 second_nic: bool = False, crash: bytes | None = GUEST_CRASHED) -> None:
        self.serial = workdir / "serial.log"
        # interactive: the console serial port is also a unix socket the test types on (send_keys).
        self.socket = workdir / "serial.sock" if interactive else None
        # ttyS1: what a test agent inside the guest reports (see tests/e2e/agent.py).
        self.agent = workdir / "agent.log"
        self.machine = qemu.Machine(workdir, disk=disk, iso=iso, usb=usb, memory_mb=memory_mb, serial_log=self.serial,
                                    serial2_log=self.agent, guest_services=list(guest_services or []),
                                    serial_socket=self.socket, drives=list(drives or []),
                                    extra=SECOND_NIC if second_nic else [])
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self._crash = re.compile(crash) if crash else None
        self._crash_checked = 0  # bytes of the serial log already searched for it

    def start(self) -> None:
        self.machine.prepare()
        self.serial.write_bytes(b"")
        self.agent.write_bytes(b"")
        self._crash_checked = 0
        self.started = time.monotonic()
        self.proc = subprocess.Popen(self.machine.argv(), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return _clean(self.serial.read_bytes().decode("utf-8", "replace"))

    def tail(self, n: int = TAIL_LINES) -> str:
        return "\n".join(self.log().splitlines()[-n:])

    def agent_log(self) -> str:
        return _clean(self.agent.read_bytes().decode("utf-8", "replace"))

    def wait_for(self, pattern: str, timeout: float, *, fail: str | None = None, agent: bool = False,
                 after: int = 0) -> re.Match[str]:
        """Wait for ``pattern`` in the serial log (``agent``: in the test agent's ttyS1 log), searching
        from offset ``after``; a match of ``fail`` there ends the wait at once."""
        rx = re.compile(pattern)
        fail_rx = re.compile(fail) if fail else None
        deadline = time.monotonic() + timeout
        while True:
            log = self.agent_log() if agent else self.log()
            m = rx.search(log, after)
            if m:
                return m
            bad = fail_rx.search(log, after) if fail_rx else None
            if bad:
                raise AssertionError(f"the guest reported failure: {bad.group(0)[:2000]}\n{self._tails(agent)}")
            crashed = self._crashed()
            if crashed:
                raise AssertionError(f"the guest crashed ({crashed}) while waiting for /{pattern}/\n{self._tails(True)}")
            if self.proc is not None and self.proc.poll() is not None:
                out = self.proc.stdout.read().decode("utf-8", "replace") if self.proc.stdout else ""
                raise AssertionError(f"QEMU exited ({self.proc.returncode}) before /{pattern}/ appeared.\n"
                                     f"QEMU said: {out[-2000:]}\n{self._tails(agent)}")
            if time.monotonic() >= deadline:
                where = "the test agent's log (ttyS1)" if agent else "the serial console"
                raise AssertionError(f"/{pattern}/ did not appear on {where} within {timeout:.0f} s.\n"
                                     f"{self._tails(agent)}")
            time.sleep(1.0)  # polling interval of the log file, not a wait for the guest

    def _crashed(self) -> str | None:
        """The crash message (:data:`GUEST_CRASHED`) in the serial log's new bytes, if any. Only what was
        added since the last call is read (the console's TUI makes the log large)."""
        if self._crash is None:
            return None
        with self.serial.open("rb") as f:
            start = max(0, self._crash_checked - 200)  # a message split across two reads
            f.seek(start)
            new = f.read()
        self._crash_checked = start + len(new)
        m = self._crash.search(new)
        return m.group(0).decode() if m else None

    def _tails(self, agent: bool) -> str:
        text = f"--- serial log tail ---\n{self.tail()}"
        if agent:
            text += "\n--- test agent log tail (ttyS1) ---\n" + "\n".join(self.agent_log().splitlines()[-TAIL_LINES:])
        return text

    def send_keys(self, data: str | bytes) -> None:
        """Type on the console's serial line (as a terminal would send it: F2 is ESC O Q on a vt220).

        A short connection per call: QEMU also sends the console's output to a connected client, and a
        connection kept open and never read fills up and stalls the guest's serial output."""
        import socket

        assert self.socket is not None, "start the guest with interactive=True"
        raw = data.encode() if isinstance(data, str) else data
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(self.socket))
            for b in raw:   # one byte at a time, as a human types: a burst can be split mid-sequence
                s.sendall(bytes([b]))
                time.sleep(0.02)  # pacing of typed bytes on a 115200 line, not a wait for the guest

    def wait_exit(self, timeout: float) -> int:
        """Wait for QEMU to exit (the guest powered off); its exit code."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the guest did not power off within {timeout:.0f} s.\n{self._tails(False)}") from None

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
