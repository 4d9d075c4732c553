"""A deliberately slow host: the in-memory backend, with every call held at the host boundary.

A real host answers slowly (subprocesses, systemd, the journal, qx-update). :class:`SlowBackend` makes
that deterministic instead of timed: while :attr:`gate` is closed, every backend call blocks in its
worker thread until the test opens it, so a test can leave a screen *while* the call runs, then let it
finish and look at what the console does with the late result. ``delay_s`` adds a real pause to every
call besides (a slow host for a manual ``--demo``-like run or the benchmark), never needed by a test.

Nothing of the console is replaced: the screens, workers and the in-memory host are the real ones.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from qx_console.backend import HostBackend
from qx_console.memory import MemoryBackend, MemoryState

HOLD_LIMIT_S = 60.0  # a call held longer than this fails (a test that forgot to open the gate)


class SlowBackend(MemoryBackend):
    def __init__(self, state: MemoryState | None = None, *, delay_s: float = 0.0) -> None:
        super().__init__(state)
        self.delay_s = delay_s
        self.gate = threading.Event()
        self.gate.set()
        self._calls_lock = threading.Lock()
        self.started: list[str] = []
        self.finished: list[str] = []

    def hold(self) -> None:
        """From now on every call waits (in its worker thread) until :meth:`release`."""
        self.gate.clear()

    def release(self) -> None:
        self.gate.set()

    def running(self, name: str) -> bool:
        """Has a call of ``name`` started and not yet returned?"""
        with self._calls_lock:
            return self.started.count(name) > self.finished.count(name)

    def idle(self) -> bool:
        """Has every call that started returned?"""
        with self._calls_lock:
            return len(self.started) == len(self.finished)

    def _slow(self, name: str, call: Callable[[], Any]) -> Any:
        with self._calls_lock:
            self.started.append(name)
        try:
            if self.delay_s:
                time.sleep(self.delay_s)
            if not self.gate.wait(HOLD_LIMIT_S):
                raise TimeoutError(f"{name}: held for {HOLD_LIMIT_S} s (the test never released the gate)")
            return call()
        finally:
            with self._calls_lock:
                self.finished.append(name)


def _slowed(name: str) -> Callable[..., Any]:
    plain = getattr(MemoryBackend, name)

    def method(self: SlowBackend, *args: Any, **kwargs: Any) -> Any:
        return self._slow(name, lambda: plain(self, *args, **kwargs))

    method.__name__ = name
    method.__doc__ = f"{plain.__doc__ or name} (held while the gate is closed)"
    return method


# Every call a screen makes through the HostBackend interface (the abstract ones, and the probe helpers).
SLOWED = sorted(HostBackend.__abstractmethods__ | {"default_gateways"})
for _name in SLOWED:
    setattr(SlowBackend, _name, _slowed(_name))
