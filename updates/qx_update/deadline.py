"""An overall deadline per download: the defence against a slow-retrieval attack.

A server (or a man in the middle) that trickles one byte every few seconds never trips a socket's
read-gap timeout, so a download could hang for days while the update timer's unit holds its lock.
Only a clock stops it: :class:`Deadline` arms a timer thread for the whole download — connection,
headers and body — and, when it fires, shuts the response's socket down (``HTTPResponse.shutdown``,
which wakes a read blocked in another thread). The downloading thread then sees its read end and asks
:attr:`Deadline.expired` to say why, so the error names the deadline, never "connection reset".

Used by :mod:`qx_update.download` (artifacts, ``download_deadline`` in update.toml) and by
:class:`DeadlineFetcher`, the ngclient fetcher for metadata (at most :data:`METADATA_DEADLINE`).
A partial artifact stays on disk: the next run resumes it, so a slow but honest link still progresses.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, TypeVar

import urllib3
from tuf.api import exceptions as tufx
from tuf.ngclient import Urllib3Fetcher

from qx_common import log
from qx_common.errors import ExternalError

DEFAULT_DEADLINE = 3600.0  # s per artifact: a 600 MB root payload at 2 Mbit/s takes 40 min
METADATA_DEADLINE = 300.0  # s per metadata file (at most 5 MB, the targets limit)
_log = log.get("update.deadline")
T = TypeVar("T")


class Deadline:
    """A time limit for one download; use as a context manager, then :meth:`watch` each response."""

    def __init__(self, seconds: float, what: str) -> None:
        self.seconds = seconds
        self.what = what
        self.expired = False
        self._lock = threading.Lock()
        self._responses: list[Any] = []
        self._wakers: list[threading.Event] = []
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.name = "qx-update-deadline"

    def __enter__(self) -> Deadline:
        self._timer.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._timer.cancel()

    def watch(self, response: Any) -> None:
        """Shut ``response`` down when the deadline passes (at once if it already has)."""
        with self._lock:
            self._responses.append(response)
            if self.expired:
                _shutdown(response)

    def run(self, send: Callable[[], T]) -> T | None:
        """``send()`` — a request up to its status line and headers — unless the deadline passes first (None).

        Until the headers are in there is no response to shut down, and a server that trickles them a
        byte at a time (or a socket that never accepts) keeps the calling thread for as long as it
        likes: so ``send`` runs in a worker thread and the caller waits for it or for the deadline.
        A worker given up on is left to finish; :meth:`watch` its response inside ``send`` and it is
        shut down as soon as it exists. An exception of ``send`` is raised here.
        """
        done = threading.Event()
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["result"] = send()
            except BaseException as e:  # noqa: BLE001 - handed to the waiting thread, raised there
                box["error"] = e
            finally:
                done.set()

        with self._lock:
            if self.expired:
                return None
            self._wakers.append(done)
        threading.Thread(target=work, name="qx-update-request", daemon=True).start()
        done.wait()
        if "result" not in box and "error" not in box:
            return None  # woken by the deadline
        if "error" in box:
            raise box["error"]
        return box["result"]  # type: ignore[no-any-return]

    def _fire(self) -> None:
        with self._lock:
            self.expired = True
            for r in self._responses:
                _shutdown(r)
            for w in self._wakers:
                w.set()

    def message(self, got: int | None = None) -> str:
        done = f" ({got} bytes arrived)" if got is not None else ""
        return (f"{self.what}: not complete within the download deadline of {self.seconds:g} s{done} — "
                f"the server sends too slowly (a slow-retrieval attack, or a very slow link)")

    def error(self, got: int | None = None) -> ExternalError:
        return ExternalError(self.message(got),
                             hint="check the network and the server; what arrived is kept and the next run resumes "
                                  "it; a slow link may need a larger download_deadline in update.toml")


def _shutdown(response: Any) -> None:
    try:
        response.shutdown()
    except (ValueError, RuntimeError, OSError, AttributeError) as e:
        # Already released or closed (the download ended at the same moment): nothing left to stop.
        _log.debug("deadline: response already closed (%s)", e)


class DeadlineFetcher(Urllib3Fetcher):
    """ngclient's own urllib3 fetcher, with an overall deadline per metadata file."""

    def __init__(self, deadline: float, *, app_user_agent: str | None = None) -> None:
        super().__init__(app_user_agent=app_user_agent)
        self.deadline = deadline
        self._deadline = Deadline(deadline, "metadata")  # the current download's (set by _fetch)

    def _fetch(self, url: str) -> Iterator[bytes]:
        # One deadline from the connection to the last byte: the request runs under Deadline.run (a
        # server trickling its headers), the body under watch (see _chunks, called by the base _fetch).
        d = Deadline(self.deadline, f"download of {url}").__enter__()
        self._deadline = d
        try:
            chunks = d.run(lambda: super(DeadlineFetcher, self)._fetch(url))
        except BaseException:
            d.__exit__(None, None, None)
            raise
        if chunks is None:
            d.__exit__(None, None, None)
            raise tufx.SlowRetrievalError(d.message())
        return chunks

    def _chunks(self, response: urllib3.response.BaseHTTPResponse) -> Iterator[bytes]:
        # Called in _fetch's worker thread as soon as the headers are in: watched at once (and shut down
        # at once if the deadline passed meanwhile); the body is read by the caller's thread.
        d = self._deadline
        d.watch(response)
        return self._body(d, response)

    def _body(self, d: Deadline, response: urllib3.response.BaseHTTPResponse) -> Iterator[bytes]:
        try:
            try:
                yield from super()._chunks(response)
            except Exception as e:
                if d.expired:
                    raise tufx.SlowRetrievalError(d.message()) from e
                raise
            if d.expired:  # the shutdown ended the body early: a truncated file, not a complete one
                raise tufx.SlowRetrievalError(d.message())
        finally:
            d.__exit__(None, None, None)
