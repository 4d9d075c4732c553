"""Hashing beside I/O: a background thread that hashes the blocks handed to it, in order.

``hashlib`` releases the GIL for buffers larger than 2 KiB, so a hasher thread runs on another core
while the caller's thread is in ``write``/``recv``/``read`` (which release it too). The caller must
hand over blocks it will not modify afterwards (``bytes``, or a freshly allocated buffer it drops);
the queue is bounded, so at most ``DEPTH`` blocks are in flight. ``hexdigests()`` joins the thread and
re-raises anything it failed with.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Iterable

DEPTH = 4
_STOP = object()


def supported(algorithms: Iterable[str]) -> bool:
    return all(a in hashlib.algorithms_available for a in algorithms)


class BackgroundHasher:
    """Feed blocks with :meth:`update`; read the digests (and stop the thread) with :meth:`hexdigests`."""

    def __init__(self, algorithms: Iterable[str]) -> None:
        self._hashes = {a: hashlib.new(a) for a in algorithms}
        self._q: queue.Queue[object] = queue.Queue(maxsize=DEPTH)
        self._error: BaseException | None = None
        self._result: dict[str, str] | None = None
        self._thread = threading.Thread(target=self._run, name="qx-update-hash", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (block := self._q.get()) is not _STOP:
            if self._error is None:
                try:
                    for h in self._hashes.values():
                        h.update(block)  # type: ignore[arg-type]
                except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
                    self._error = e

    def update(self, block: bytes | bytearray | memoryview) -> None:
        self._q.put(block)

    def hexdigests(self) -> dict[str, str]:
        if self._result is None:
            self._q.put(_STOP)
            self._thread.join()
            if self._error is not None:
                raise self._error
            self._result = {a: h.hexdigest() for a, h in self._hashes.items()}
        return self._result

    def close(self) -> None:
        """Stop the thread (on error paths); digests are no longer needed."""
        if self._thread.is_alive():
            self._q.put(_STOP)
            self._thread.join()
