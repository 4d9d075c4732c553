"""The one byte progress bar of Quantix's command-line tools (qx-build, qx-update, qx-release).

Call order: ``Progress(label, total)``, then ``update(n)`` for every ``n`` bytes done, then ``close()``
once. Whether it draws is chosen once per process by :data:`MODE` (a CLI sets it before any work starts):

* ``"text"`` (default) — on stderr. On a terminal one line redrawn in place; elsewhere (CI, a log, a
  pipe) one line per 10 %, so logs stay short but still show movement. ``close()`` prints the size,
  the time and the rate.
* ``"off"`` — nothing (``qx-update --json``: stdout carries only its models).

Independently of the mode, ``enabled`` may be a callable (an :data:`Observer`), which then gets
``(label, done, total)`` on every update instead of anything being drawn — a UI (the installer) draws
its own bar, and ``qx-update apply --json`` prints its ``ProgressEvent`` lines from one.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Literal, TextIO

# An observer gets (label, done, total) on every update.
Observer = Callable[[str, int, int], None]

MODE: Literal["text", "off"] = "text"


def _mib(n: int) -> str:
    return f"{n / 1024**2:.1f} MiB"


class Progress:
    def __init__(self, label: str, total: int, *, start: int = 0, enabled: bool | Observer = True,
                 stream: TextIO | None = None) -> None:
        """``start``: bytes already done (a resumed download); ``enabled``: True draws, False nothing, a
        callable observes instead of drawing; ``stream``: where text goes (default: stderr, at draw time)."""
        self.observer: Observer | None = enabled if callable(enabled) else None
        self.enabled = bool(enabled) and self.observer is None
        self.label = label
        self.total = max(total, 1)
        self.done = start
        self._stream = stream
        self._start = start
        self._decile = int(start * 10 / self.total)
        self._t0 = time.monotonic()

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stderr

    def update(self, n: int) -> None:
        self.done += n
        if self.observer is not None:
            self.observer(self.label, self.done, self.total)
        if not self.enabled or MODE == "off":
            return
        frac = min(self.done / self.total, 1.0)
        out = self.stream
        if out.isatty():
            bar = "#" * int(frac * 30)
            out.write(f"\r  {self.label} [{bar:<30}] {frac * 100:5.1f} % {_mib(self.done)}/{_mib(self.total)}")
            out.flush()
        elif int(frac * 10) != self._decile:
            self._decile = int(frac * 10)
            out.write(f"  {self.label}: {self._decile * 10} % ({_mib(self.done)}/{_mib(self.total)})\n")
            out.flush()

    def close(self) -> None:
        if not self.enabled or MODE != "text":
            return
        out = self.stream
        dt = max(time.monotonic() - self._t0, 1e-6)
        if out.isatty():
            out.write("\n")
        rate = (self.done - self._start) / dt / 1024**2
        out.write(f"  {self.label}: {_mib(self.done)} in {dt:.1f} s ({rate:.0f} MiB/s)\n")
        out.flush()
