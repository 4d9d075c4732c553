"""A byte progress bar on stderr: redrawn in place on a terminal, a line per 10 % otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, label: str, total: int, stream: TextIO | None = None) -> None:
        self.label, self.total, self.done = label, max(total, 1), 0
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._last_decile = -1
        self._t0 = time.monotonic()

    def update(self, n: int) -> None:
        self.done += n
        pct = min(100, self.done * 100 // self.total)
        if self.tty:
            rate = self.done / max(time.monotonic() - self._t0, 1e-6) / 2**20
            self.stream.write(f"\r{self.label}: {pct:3d}% {self.done / 2**20:8.1f}/{self.total / 2**20:.1f} MiB "
                              f"{rate:6.1f} MiB/s")
            self.stream.flush()
        elif pct // 10 != self._last_decile:
            self._last_decile = pct // 10
            self.stream.write(f"{self.label}: {pct}% ({self.done}/{self.total} bytes)\n")

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
        self.stream.flush()
