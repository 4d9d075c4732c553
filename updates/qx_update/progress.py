"""A byte progress bar on stderr: redrawn in place on a terminal, one line per 10 % elsewhere (logs)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable

# An observer gets (label, done, total) on every update: a UI (the installer) draws its own bar.
Observer = Callable[[str, int, int], None]

# "text": a bar on stderr; "json": one JSON line per percent on stdout ({"phase", "done", "total",
# "percent", "message"}), for callers such as qx-console that drive their own progress bar.
MODE = "text"


def _mib(n: int) -> str:
    return f"{n / 1024**2:.1f} MiB"


class Progress:
    def __init__(self, label: str, total: int, *, start: int = 0, enabled: bool | Observer = True) -> None:
        """``enabled``: True draws the bar, False nothing, a callable is called instead of drawing."""
        self.observer: Observer | None = enabled if callable(enabled) else None
        enabled = bool(enabled) and self.observer is None
        self.label = label
        self.total = max(total, 1)
        self.done = start
        self.enabled = enabled
        self._tty = sys.stderr.isatty()
        self._decile = int(start * 10 / self.total)
        self._t0 = time.monotonic()
        self._start = start
        self._pct = -1

    def update(self, n: int) -> None:
        self.done += n
        if self.observer is not None:
            self.observer(self.label, self.done, self.total)
        if not self.enabled:
            return
        frac = min(self.done / self.total, 1.0)
        if MODE == "json":
            pct = int(frac * 100)
            if pct != self._pct:
                self._pct = pct
                print(json.dumps({"phase": self.label, "done": self.done, "total": self.total, "percent": pct,
                                  "message": f"{self.label} {pct} %"}), flush=True)
            return
        if self._tty:
            bar = "#" * int(frac * 30)
            sys.stderr.write(f"\r  {self.label} [{bar:<30}] {frac * 100:5.1f} % {_mib(self.done)}/{_mib(self.total)}")
            sys.stderr.flush()
        elif int(frac * 10) != self._decile:
            self._decile = int(frac * 10)
            print(f"  {self.label}: {self._decile * 10} % ({_mib(self.done)}/{_mib(self.total)})",
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        if not self.enabled or MODE == "json":
            return
        dt = max(time.monotonic() - self._t0, 1e-6)
        if self._tty:
            sys.stderr.write("\n")
        rate = (self.done - self._start) / dt / 1024**2
        print(f"  {self.label}: {_mib(self.done)} in {dt:.1f} s ({rate:.0f} MiB/s)", file=sys.stderr, flush=True)
