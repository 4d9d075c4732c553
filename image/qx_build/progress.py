"""A plain progress bar on stderr for long steps (works on a terminal and in CI logs).

On a terminal it redraws one line; elsewhere (CI, no tty) it prints a line every 10 %, so logs stay
short but still show movement.
"""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, label: str, total: int) -> None:
        self.label = label
        self.total = max(total, 1)
        self.done = 0
        self._tty = sys.stderr.isatty()
        self._last_decile = -1
        self._start = time.monotonic()

    def update(self, n: int) -> None:
        self.done += n
        frac = min(self.done / self.total, 1.0)
        if self._tty:
            bar = "#" * int(frac * 30)
            sys.stderr.write(f"\r  {self.label} [{bar:<30}] {frac * 100:5.1f} %")
            sys.stderr.flush()
        else:
            decile = int(frac * 10)
            if decile != self._last_decile:
                self._last_decile = decile
                print(f"  {self.label}: {decile * 10} %", file=sys.stderr, flush=True)

    def close(self) -> None:
        elapsed = time.monotonic() - self._start
        if self._tty:
            sys.stderr.write("\n")
        print(f"  {self.label}: done in {elapsed:.1f} s", file=sys.stderr, flush=True)
