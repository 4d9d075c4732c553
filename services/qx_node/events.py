"""The event bus: lifecycle changes from libvirt's event thread to API subscribers (SSE).

Publishers run on any thread (libvirt's event loop thread, the reconnector); subscribers are
asyncio queues owned by one request each. ``publish_lifecycle`` coalesces bursts: libvirt often
reports several transitions of one domain within milliseconds (defined → started → resumed);
within one ``window`` only the latest state per domain is delivered, with the list of the
transitions seen, so a client never misses that something happened but is not flooded.
Slow subscribers lose the oldest events (bounded queues), never block the publisher.
``shutdown()`` (the server is stopping) hands every subscriber ``STOP``, so streams end at once
instead of holding the stop for its grace period.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from typing import Any

QUEUE_SIZE = 1000
STOP: dict[str, Any] = {"type": "stop"}  # the end of every stream (compared by identity)


class EventBus:
    def __init__(self, window: float = 0.2) -> None:
        self._window = window
        self._lock = threading.Lock()
        self._subs: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Queue[dict[str, Any]]]] = {}
        self._ids = itertools.count(1)
        self._seq = itertools.count(1)
        self._pending: dict[str, dict[str, Any]] = {}
        self._timer: threading.Timer | None = None
        self.published = 0
        self.stopping = False

    # -- subscribers (async side) --------------------------------------------------------------
    def subscribe(self) -> tuple[int, asyncio.Queue[dict[str, Any]]]:
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_SIZE)
        with self._lock:
            sid = next(self._ids)
            self._subs[sid] = (asyncio.get_running_loop(), q)
        return sid, q

    def unsubscribe(self, sid: int) -> None:
        with self._lock:
            self._subs.pop(sid, None)

    # -- publishers (any thread) ---------------------------------------------------------------
    def publish(self, event: dict[str, Any]) -> None:
        event = {"seq": next(self._seq), "time": time.time(), **event}
        self.published += 1
        with self._lock:
            subs = list(self._subs.values())
        for loop, q in subs:
            try:
                loop.call_soon_threadsafe(_put_dropping_oldest, q, event)
            except RuntimeError:  # the subscriber's loop is closed: it will unsubscribe itself
                pass

    def publish_lifecycle(self, vm: str, event: str, detail: str, state: str) -> None:
        with self._lock:
            p = self._pending.get(vm)
            if p is None:
                p = self._pending[vm] = {"type": "lifecycle", "vm": vm, "transitions": []}
            p["transitions"].append(f"{event}/{detail}")
            p.update(event=event, detail=detail, state=state)
            if self._timer is None:
                self._timer = threading.Timer(self._window, self._flush)
                self._timer.daemon = True
                self._timer.start()

    def _flush(self) -> None:
        with self._lock:
            pending, self._pending, self._timer = self._pending, {}, None
        for ev in pending.values():
            self.publish(ev)

    def shutdown(self) -> None:
        """End every stream (now and later subscribers); safe from a signal handler or any thread."""
        with self._lock:
            self.stopping = True
            subs = list(self._subs.values())
        for loop, q in subs:
            try:
                loop.call_soon_threadsafe(_put_dropping_oldest, q, STOP)
            except RuntimeError:
                pass

    def close(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None


def _put_dropping_oldest(q: asyncio.Queue[dict[str, Any]], event: dict[str, Any]) -> None:
    if q.full():
        q.get_nowait()
    q.put_nowait(event)
