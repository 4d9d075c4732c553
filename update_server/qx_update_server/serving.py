"""Serving the app: our own HTTP/1.1 front, on public APIs only, with uvicorn behind it for the ASGI routes.

Every client connection (each ``--listen``/``--admin-listen`` socket, TLS or not) is accepted by
:class:`_Connection`, an ``asyncio.Protocol`` of ours that parses requests with httptools'
public parser API (``HttpRequestParser`` and its callbacks, ``get_method``, ``get_http_version``,
``should_keep_alive``; ``HttpResponseParser``). It

* answers ``GET``/``HEAD /metadata/<name>`` itself, with one write
  (:func:`.metadata_http.raw_response`): the path every host polls costs no ASGI scope, task or second
  hop (uvicorn's per-request cycle was ~2/3 of the time; docs/performance.md);
* forwards every other request, re-framed, over a connection to a private Unix socket on which
  uvicorn (public API: ``Config``/``Server.serve(sockets=…)``) runs the ASGI app, one socket per listener
  so the app's ``ListenerSplit`` still tells the admin listener from the public one by
  ``scope["server"]`` (a backend connection is kept for the next request when the response allows it,
  :class:`_Backend`); the backend response is piped
  back with its ``Connection`` header replaced by ours; the end of the response is where
  ``HttpResponseParser`` says the message is complete;
* leaves connections that send nothing in the kernel (``TCP_DEFER_ACCEPT``) until their first bytes or
  about ``header_timeout`` seconds;
* enforces, per connection, what uvicorn does not: a **header timeout** (a request's headers complete
  within ``header_timeout`` seconds of the connection opening, or of the previous response ending —
  however slowly the bytes drip in), a **keep-alive timeout** (:data:`KEEP_ALIVE` s with no byte of a
  next request), an **idle timeout** while a request body arrives, a **header size limit**
  (:data:`MAX_HEADER_BYTES`, httptools has none) and a **connection cap** across all listeners (beyond
  ``max_connections``, the connections waiting longest for request headers are closed a moment later;
  those busy with a request never are).

Why this and not the alternatives (issue 16): before, the same fast path lived in subclasses of uvicorn's
protocol classes overriding their parser callbacks — uvicorn's private API, which any uvicorn release
may change. A separate static-file server process (nginx-style: sendfile, ETag, Range) for
``/metadata/`` and ``/targets/`` would need a second public port or a proxy in front anyway, and a
second process to supervise; the documented nginx front (tests/update_server/test_nginx_front.py) remains
the answer for very large fleets. Writing a whole ASGI server ourselves would re-do what uvicorn does
well (request cycles, lifespan, streaming). The front keeps uvicorn for all of that, behind a socket,
and owns only the connection handling and the one hot path; the price is one Unix-socket hop for API
requests (check-ins, admin), measured in docs/performance.md.

Invariants:

* responses leave in request order: a connection's requests form a queue (:attr:`_Connection._queue`);
  only its head is answered or forwarded, one backend exchange at a time per client connection;
* memory per connection is bounded: answers are written only while the client's transport accepts
  them (``pause_writing``), reading stops while more than one request is queued, a backend's answer is
  read only as fast as the client takes it, and a request body only as fast as the backend takes it;
* what the backend sees is one well-framed request per connection (content-length, or re-chunked), the
  client's headers without its hop-by-hop ones.

Call order: :func:`bind` for each listener (turns "address in use" into a clear error before anything
starts) → :func:`backend_sockets` (its admin address goes to ``create_app``) → :func:`serve`.
:func:`raise_fd_limit` lifts the soft descriptor limit so the cap, not ``EMFILE``, bounds connections.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import json
import math
import os
import resource
import shutil
import signal
import socket
import ssl
import tempfile
from dataclasses import dataclass, field
from typing import Any

from qx_common.errors import EnvironmentError_, UserError
from qx_update_server.metadata_http import RAW_TARGET, MetadataFiles, http_date, raw_response

try:  # the C parser, from the "server" extra (requirements.lock): the front cannot run without it
    import httptools
except ImportError:  # pragma: no cover - depends on the installation
    httptools = None  # type: ignore[assignment]

HEADER_TIMEOUT = 10.0
IDLE_TIMEOUT = 30.0
KEEP_ALIVE = 5.0  # s a kept-alive connection may wait for the first byte of its next request (uvicorn's default)
MAX_CONNECTIONS = 2048
MAX_HEADER_BYTES = 16 << 10  # a request's headers; more closes the connection
_TICK = 0.5  # s: the shortest wait before a connection's deadline is checked again
_SWEEP_DELAY = 0.1  # s after the cap is exceeded before the longest-waiting connections are closed
# A connection is closed by the cap only after waiting this long: a host's request, sent with its
# connection, has been read by then even while a flood of connections keeps the loop busy.
_MIN_WAIT = 1.0
# Request headers not passed to the backend: hop-by-hop (RFC 9110 7.6.1); the front manages that connection.
_HOP = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"upgrade", b"te", b"trailer"))


def _error(status: bytes, message: str, hint: str) -> bytes:
    """A whole response in the server's one error shape (qx_update_server.api.errors), closing the connection."""
    body = json.dumps({"error": message, "field": None, "hint": hint}).encode()
    return (b"HTTP/1.1 " + status + b"\r\ndate: " + http_date() + b"\r\ncontent-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body)


@dataclass
class _Front:
    """What all listeners' connections share: the limits, the metadata files and the open connections."""

    loop: asyncio.AbstractEventLoop
    metadata: MetadataFiles | None
    header_timeout: float
    idle_timeout: float
    max_connections: int
    connections: set[_Connection] = field(default_factory=set)
    sweep_pending: bool = False
    # idle kept-alive backend connections, per backend socket path, most recently used last
    pools: dict[str, list[_Backend]] = field(default_factory=dict)

    def added(self) -> None:
        if len(self.connections) > self.max_connections and not self.sweep_pending:
            # Not at once: asyncio accepts a whole batch of connections before it reads from any of
            # them, so a host's complete request may not have been read yet. A moment later every
            # connection that sent a request has left the "waiting" state and is safe from eviction.
            self.sweep_pending = True
            self.loop.call_later(_SWEEP_DELAY, self._sweep)

    def _sweep(self) -> None:
        """Close the connections waiting longest for request headers until at most max_connections remain."""
        self.sweep_pending = False
        excess = len(self.connections) - self.max_connections
        if excess <= 0:
            return
        cutoff = self.loop.time() - _MIN_WAIT
        waiting = sorted((c for c in self.connections if c.waiting_since is not None
                          and c.waiting_since < cutoff and not c.transport.is_closing()),
                         key=lambda c: c.waiting_since or 0.0)
        for c in waiting[:excess]:
            c.transport.abort()
        if len(waiting) < excess:  # the rest are too young to judge: look again soon
            self.sweep_pending = True
            self.loop.call_later(_SWEEP_DELAY, self._sweep)


@dataclass
class _Static:
    """A queued metadata answer, made when it is written (so a long queue holds no answer bytes)."""

    name: bytes
    head: bool
    if_none_match: bytes | None
    keep_alive: bool


class _Connection(asyncio.Protocol):
    """One client connection: parse, answer metadata, forward the rest in order, enforce the limits."""

    transport: asyncio.Transport

    def __init__(self, front: _Front, backend: str) -> None:
        self.front = front
        self.loop = front.loop
        self.backend = backend  # the Unix socket path of this listener's uvicorn
        self.parser = httptools.HttpRequestParser(self)
        self._queue: collections.deque[_Static | _Exchange] = collections.deque()
        self.waiting_since: float | None = None  # set while the next request's headers are awaited
        self._served = False  # a response has ended on this connection (the keep-alive wait applies)
        self._in_head = False  # between a request's first byte and its headers' end
        self._header_bytes = 0
        self._receiving: _Exchange | None = None  # the request whose body is arriving (None: static or none)
        self._in_request = False  # between a request's headers and its end
        self._last_data = 0.0
        self._guard: asyncio.TimerHandle | None = None
        self._write_paused = False
        self._backend_holds = 0  # backend connections that cannot take more body now (or are connecting)
        self._reading = True
        self._done = False  # no more requests are read (Connection: close, a parse error)
        # the request being parsed
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._if_none_match: bytes | None = None
        self._chunked = False
        self._has_body = False

    # ---- asyncio.Protocol ----

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._last_data = self.waiting_since = self.loop.time()
        self.front.connections.add(self)
        self._arm()
        self.front.added()

    def connection_lost(self, exc: Exception | None) -> None:
        self.front.connections.discard(self)
        if self._guard is not None:
            self._guard.cancel()
            self._guard = None
        for item in self._queue:  # a backend request cut off: uvicorn's app sees http.disconnect
            if isinstance(item, _Exchange):
                item.abort()
        self._queue.clear()

    def data_received(self, data: bytes) -> None:
        if self._done:
            return
        self._last_data = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            # Upgrade (e.g. h2c) is not offered: the request was answered as plain HTTP/1.1 (its Upgrade
            # header not forwarded); the bytes after it are the next request, for a new parser.
            self.parser = httptools.HttpRequestParser(self)
            rest = data[e.args[0]:]
            if rest:
                self.data_received(rest)
            return
        except httptools.HttpParserError:
            self._fail(b"400 Bad Request", "not a valid HTTP/1.1 request", "send HTTP/1.1 to this server")
            return
        if self._in_head:
            self._header_bytes += len(data)
            if self._header_bytes > MAX_HEADER_BYTES:
                self.transport.abort()  # headers larger than any client of ours sends

    def pause_writing(self) -> None:
        self._write_paused = True
        self._update_reading()
        for item in self._queue:
            if isinstance(item, _Exchange):
                item.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        for item in self._queue:
            if isinstance(item, _Exchange):
                item.resume_reading()
        self._pump()

    # ---- httptools callbacks ----

    def on_message_begin(self) -> None:
        self._in_head = True
        self.waiting_since = self.waiting_since or self.loop.time()
        self._url = b""
        self._headers = []
        self._if_none_match = None
        self._chunked = False
        self._has_body = False

    def on_url(self, url: bytes) -> None:
        self._url += url  # bounded by the header limit, like the headers

    def on_header(self, name: bytes, value: bytes) -> None:
        lname = name.lower()
        if lname == b"if-none-match":
            self._if_none_match = value if self._if_none_match is None else self._if_none_match + b"," + value
        elif lname == b"transfer-encoding":
            self._has_body = True
            self._chunked = self._chunked or b"chunked" in value.lower()
        elif lname == b"content-length" and value.strip() != b"0":
            self._has_body = True
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._header_bytes = 0
        self.waiting_since = None
        self._in_request = True
        method = self.parser.get_method()
        keep_alive = self.parser.should_keep_alive() and self.parser.get_http_version() != "1.0"
        if self.front.metadata is not None and not self._has_body and method in (b"GET", b"HEAD"):
            m = RAW_TARGET.match(self._url)
            if m is not None:
                self._queue.append(_Static(m.group(1), method == b"HEAD", self._if_none_match, keep_alive))
                self._receiving = None
                return
        lines = [method, b" ", self._url, b" HTTP/", self.parser.get_http_version().encode(), b"\r\n"]
        for name, value in self._headers:
            if name.lower() not in _HOP:
                lines += [name, b": ", value, b"\r\n"]
        # HTTP/1.1 to the backend stays open for the next request (see _Backend); HTTP/1.0 ends with it
        lines.append(b"\r\n" if self.parser.get_http_version() != "1.0" else b"connection: close\r\n\r\n")
        ex = _Exchange(self, b"".join(lines), head=method == b"HEAD", keep_alive=keep_alive, chunked=self._chunked)
        self._queue.append(ex)
        self._receiving = ex
        self._update_reading()
        self._pump()

    def on_body(self, body: bytes) -> None:
        if self._receiving is not None:
            self._receiving.send_body(body)

    def on_message_complete(self) -> None:
        self._in_request = False
        if self._receiving is not None:
            self._receiving.end_body()
            self._receiving = None
        item = self._queue[-1] if self._queue else None
        if item is not None and not item.keep_alive:
            self._done = True  # nothing after this request is read
        self._pump()

    # ---- answering in order ----

    def _pump(self) -> None:
        """Answer or forward the queue's head, as far as the client takes the answers."""
        while self._queue and not self.transport.is_closing():
            item = self._queue[0]
            if isinstance(item, _Static):
                if self._in_request and item is self._queue[-1]:
                    return  # its request has not ended yet (it has no body: on_message_complete is next)
                if self._write_paused:
                    break
                self._queue.popleft()
                assert self.front.metadata is not None
                self.transport.write(raw_response(self.front.metadata, item.name, head=item.head,
                                                  if_none_match=item.if_none_match, keep_alive=item.keep_alive))
                if not item.keep_alive:
                    self.transport.close()
                    return
                self._served = True
                continue
            if not item.started:
                item.start()
            return  # the exchange calls exchange_done when its answer is complete
        self._idle_if_done()
        self._update_reading()

    def exchange_done(self, ex: _Exchange, *, close: bool) -> None:
        """``ex``'s response is complete (written); ``close``: the connection ends with it."""
        if self._queue and self._queue[0] is ex:
            self._queue.popleft()
        if self._receiving is ex:  # answered before its body ended (e.g. 413): the rest is not read
            close = True
        if close:
            self.transport.close()
            return
        self._served = True
        self._pump()

    def _idle_if_done(self) -> None:
        if not self._queue and not self._in_request and not self._in_head and self.waiting_since is None:
            self.waiting_since = self.loop.time()
            self._arm()

    def _update_reading(self) -> None:
        want = not (self._write_paused or self._backend_holds or len(self._queue) > 1)
        if want == self._reading or self.transport.is_closing():
            return
        self._reading = want
        if want:
            self._last_data = self.loop.time()  # the idle timeout counts from here again
            self.transport.resume_reading()
        else:
            self.transport.pause_reading()

    def backend_hold(self, delta: int) -> None:
        self._backend_holds += delta
        self._update_reading()

    def _fail(self, status: bytes, message: str, hint: str) -> None:
        self._done = True
        if self._receiving is not None:  # a body cut off mid-way: its request cannot be completed
            self.transport.abort()
        elif not self._queue:
            self.transport.write(_error(status, message, hint))
            self.transport.close()
        else:  # answers owed before it: end the connection after them (a bad request is not answered)
            last = self._queue[-1]
            last.keep_alive = False
            if isinstance(last, _Exchange) and last.started:
                last.close_after = True

    # ---- the guard ----

    def _due(self, now: float) -> float:
        if self.waiting_since is not None:
            wait = KEEP_ALIVE if self._served and not self._in_head else self.front.header_timeout
            return self.waiting_since + wait
        if self._in_request and self._receiving is not None and self._reading:
            # (while we hold the body back — the backend is slow to take it — the client is not idle)
            return self._last_data + self.front.idle_timeout
        return now + min(self.front.header_timeout, self.front.idle_timeout)  # being answered: look later

    def _arm(self) -> None:
        """One timer per connection, at its next deadline (not a periodic tick: with thousands of idle
        connections, ticks alone kept the loop busy). A deadline that moves later lets the timer wake
        early and re-arm; one that moves earlier (a response ended: the keep-alive wait) re-arms now."""
        now = self.loop.time()
        when = max(self._due(now) + 0.01, now + _TICK)
        if self._guard is not None:
            if self._guard.when() <= when:
                return
            self._guard.cancel()
        self._guard = self.loop.call_at(when, self._check)

    def _check(self) -> None:
        self._guard = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        if now >= self._due(now):
            self.transport.abort()
            return
        self._arm()


class _Backend(asyncio.Protocol):
    """One connection to the backend (uvicorn on a Unix socket), kept for the next request when the
    response allows it: a connection and uvicorn's per-connection set-up per API request cost ~+10-40 %
    of a check-in's CPU (docs/performance.md). It serves one :class:`_Exchange` at a time."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.transport: asyncio.Transport | None = None
        self.exchange: _Exchange | None = None
        self.idle_since = 0.0
        self.ready: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.exchange is not None:
            self.exchange.data_received(data)
        elif self.transport is not None:
            self.transport.abort()  # nothing was asked: not a response we can place

    def connection_lost(self, exc: Exception | None) -> None:
        ex, self.exchange = self.exchange, None
        if ex is not None:
            ex.backend_lost()

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.backend_paused(True)

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.backend_paused(False)


_POOL_MAX = 32  # idle backend connections kept per listener
_POOL_IDLE = 60.0  # s an idle backend connection is reused for (uvicorn's keep-alive is far longer)


class _Exchange:
    """One forwarded request: a backend connection (pooled or new), its response piped to the client."""

    def __init__(self, conn: _Connection, request_head: bytes, *, head: bool, keep_alive: bool,
                 chunked: bool) -> None:
        self.conn = conn
        self.keep_alive = keep_alive  # the client's connection stays open after this response
        self.close_after = False
        self.started = False
        self._head_request = head
        self._chunked = chunked
        self._out: list[bytes] | None = [request_head]  # written once connected; None: connected
        self._body_ended = False
        self.backend: _Backend | None = None
        self._aborted = False
        self._holding = 0  # backend_hold()s this exchange placed on the client
        self._backend_paused = False
        self._resp_head = b""  # the response head being collected
        self._passing = False  # the final response's head is passed on: bytes go straight through
        self._reusable = request_head.endswith(b"\r\n\r\n") and not request_head.endswith(
            b"connection: close\r\n\r\n")  # and the response does not say close
        self._parser = httptools.HttpResponseParser(self)
        self._final = False  # the parser is in a final (>= 200) response
        self._complete = False
        self._read_paused = False

    # -- request side --

    def start(self) -> None:
        self.started = True
        pool = self.conn.front.pools.get(self.conn.backend)
        now = self.conn.loop.time()
        while pool:
            b = pool.pop()
            if b.transport is not None and not b.transport.is_closing() and now - b.idle_since < _POOL_IDLE:
                self._attach(b)
                return
            if b.transport is not None:
                b.transport.close()
        self._hold(1)  # the client's body waits until the backend connection is there
        task = self.conn.loop.create_task(self._connect())
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _connect(self) -> None:
        try:
            _, b = await self.conn.loop.create_unix_connection(lambda: _Backend(self.conn.backend),
                                                               self.conn.backend)
        except OSError:
            self._hold(-self._holding)
            if not self._aborted:
                self._answer_error()
            return
        self._hold(-1)
        if self._aborted:
            if b.transport is not None:
                b.transport.abort()
            return
        self._attach(b)

    def _attach(self, b: _Backend) -> None:
        self.backend = b
        b.exchange = self
        assert b.transport is not None
        out, self._out = self._out or [], None
        b.transport.write(b"".join(out))
        if self._read_paused:
            b.transport.pause_reading()

    def _answer_error(self) -> None:
        """The backend is not there (stopping, or not started yet): 503, and the connection ends."""
        t = self.conn.transport
        if not t.is_closing():
            t.write(_error(b"503 Service Unavailable", "the server is not ready or is stopping",
                           "retry in a moment"))
            t.close()

    def send_body(self, data: bytes) -> None:
        piece = b"%x\r\n%b\r\n" % (len(data), data) if self._chunked else data
        if self._out is not None:
            self._out.append(piece)
        elif self.backend is not None and self.backend.transport is not None and not self.backend.transport.is_closing():
            self.backend.transport.write(piece)

    def end_body(self) -> None:
        self._body_ended = True
        if self._chunked:
            self.send_body(b"")  # the last chunk: "0\r\n\r\n"

    def backend_paused(self, paused: bool) -> None:  # the backend's socket is full: hold the client's body
        if paused != self._backend_paused:
            self._backend_paused = paused
            self._hold(1 if paused else -1)

    def _hold(self, delta: int) -> None:
        self._holding += delta
        self.conn.backend_hold(delta)

    # -- response side --

    def data_received(self, data: bytes) -> None:
        if self._complete:
            return
        out = self.conn.transport
        if self._passing:
            out.write(data)
        else:
            self._resp_head += data
            while not self._passing:
                head, sep, rest = self._resp_head.partition(b"\r\n\r\n")
                if not sep:
                    if len(self._resp_head) > 1 << 20:
                        self.abort()
                    break
                lines = head.split(b"\r\n")
                status = lines[0].split(b" ", 2)
                final = len(status) > 1 and not status[1].startswith(b"1")
                close = final and (not self.keep_alive or self.close_after or self.conn._receiving is self)
                kept = []
                for ln in lines:
                    if ln[:11].lower() == b"connection:":
                        if b"close" in ln.lower():
                            self._reusable = False  # uvicorn ends this backend connection
                    else:
                        kept.append(ln)
                if close:
                    kept.append(b"connection: close")
                    self.keep_alive = False
                out.write(b"\r\n".join(kept) + b"\r\n\r\n")
                self._resp_head = rest
                if final:
                    self._passing = True
                    if rest:
                        out.write(rest)
                    self._resp_head = b""
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self.abort()
            self.conn.transport.close()

    def on_headers_complete(self) -> None:
        if self._parser.get_status_code() >= 200:
            self._final = True
            if self._head_request:  # a HEAD answer has no body, whatever its content-length says
                self._finish()

    def on_message_complete(self) -> None:
        if self._final:
            self._finish()

    def _finish(self) -> None:
        if self._complete:
            return
        self._complete = True
        b, self.backend = self.backend, None
        if b is not None:
            b.exchange = None
            # Reused only when the whole request was sent and the response did not end the connection.
            if self._reusable and self._body_ended and b.transport is not None and not b.transport.is_closing():
                if self._read_paused:
                    b.transport.resume_reading()
                pool = self.conn.front.pools.setdefault(b.path, [])
                if len(pool) < _POOL_MAX:
                    b.idle_since = self.conn.loop.time()
                    pool.append(b)
                else:
                    b.transport.close()
            elif b.transport is not None:
                b.transport.close()
        if self._holding:
            self._hold(-self._holding)
        self.conn.exchange_done(self, close=not self.keep_alive)

    def backend_lost(self) -> None:
        """The backend connection ended before a whole response: nothing more can be framed here."""
        self.backend = None
        if self._holding:
            self._hold(-self._holding)
        if self._complete or self._aborted:
            return
        self._complete = True
        if not self._passing and not self._resp_head:
            self._answer_error()
        else:
            self.conn.transport.close()

    def pause_reading(self) -> None:
        self._read_paused = True
        if self.backend is not None and self.backend.transport is not None and not self.backend.transport.is_closing():
            self.backend.transport.pause_reading()

    def resume_reading(self) -> None:
        self._read_paused = False
        if self.backend is not None and self.backend.transport is not None and not self.backend.transport.is_closing():
            self.backend.transport.resume_reading()

    def abort(self) -> None:
        self._aborted = True
        b, self.backend = self.backend, None
        if b is not None:
            b.exchange = None
            if b.transport is not None:
                b.transport.abort()


def raise_fd_limit(wanted: int) -> int:
    """Raise the soft RLIMIT_NOFILE towards ``wanted`` (never above the hard limit); return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def bind(host: str, port: int, flag: str = "--listen") -> socket.socket:
    """A socket bound to host:port (asyncio listens on it in :func:`serve`), or a :class:`UserError`
    that says what is in the way."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio turns Nagle off (TCP_NODELAY) only on sockets whose proto says TCP,
    # and with Nagle on a kept-alive connection waits ~40 ms per response for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        # Bound, not yet listening: connections are refused (not left hanging) until serve() starts.
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        where = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
        if e.errno == errno.EADDRINUSE:
            raise UserError(f"{flag} {where}: the port is already in use",
                            hint=f"stop what listens there (ss -ltnp 'sport = :{port}') or choose another port") from e
        if e.errno == errno.EADDRNOTAVAIL:
            raise UserError(f"{flag} {where}: no network interface of this machine has that address",
                            hint="use an address of this machine, 127.0.0.1, or 0.0.0.0 for all") from e
        if e.errno == errno.EACCES:
            raise EnvironmentError_(f"{flag} {where}: permission denied",
                                    hint="ports below 1024 need root or CAP_NET_BIND_SERVICE; use a port >= 1024") from e
        raise EnvironmentError_(f"{flag} {where}: cannot listen: {e.strerror or e}") from e
    sock.set_inheritable(True)
    return sock


@dataclass
class Backend:
    """The private Unix sockets uvicorn serves the app on, one per listener, in a 0700 directory of ours.

    ``admin_address`` is what the app's ``ListenerSplit`` sees as ``scope["server"]`` for requests that
    came in on the admin listener (uvicorn reports a Unix socket as ``(path, None)``)."""

    directory: str
    paths: list[str]
    sockets: list[socket.socket]

    @property
    def admin_address(self) -> tuple[str, None]:
        return (self.paths[-1], None)

    def close(self) -> None:
        for s in self.sockets:
            s.close()
        shutil.rmtree(self.directory, ignore_errors=True)


_DIR_PREFIX = "qx-update-server-"


def _remove_stale_dirs() -> None:
    """Remove this user's backend socket directories whose server process no longer runs."""
    for entry in os.scandir(tempfile.gettempdir()):
        pid = entry.name.removeprefix(_DIR_PREFIX).split("-", 1)[0]
        if not entry.name.startswith(_DIR_PREFIX) or not pid.isdigit():
            continue
        try:
            if not entry.is_dir(follow_symlinks=False) or entry.stat(follow_symlinks=False).st_uid != os.getuid():
                continue
            os.kill(int(pid), 0)  # running (or another process with that id now): left alone
        except ProcessLookupError:
            shutil.rmtree(entry.path, ignore_errors=True)
        except OSError:
            continue


def backend_sockets(listeners: int) -> Backend:
    """One listening Unix socket per listener (the admin one last). Needs httptools (the "server" extra)."""
    if httptools is None:
        raise EnvironmentError_("qx-update-server serve needs httptools, which is not installed",
                                hint="install the update server with its 'server' extra (requirements.lock)")
    _remove_stale_dirs()
    # 0700: only this user reaches the backend; the process id in the name lets a later start remove it
    # if this process is killed before it can (SIGKILL, a crash)
    directory = tempfile.mkdtemp(prefix=f"{_DIR_PREFIX}{os.getpid()}-")
    paths, socks = [], []
    for i in range(listeners):
        path = os.path.join(directory, f"listener-{i}.sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        s.listen(4096)  # connections wait here until uvicorn accepts (after the app's start-up)
        s.set_inheritable(True)
        paths.append(path)
        socks.append(s)
    return Backend(directory, paths, socks)


def _tls_context(tls: tuple[str, str]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tls[0], tls[1])
    return ctx


def serve(app: Any, sockets: list[socket.socket], backend: Backend, *, header_timeout: float = HEADER_TIMEOUT,
          idle_timeout: float = IDLE_TIMEOUT, max_connections: int = MAX_CONNECTIONS,
          tls: tuple[str, str] | None = None, metadata: MetadataFiles | None = None) -> None:
    """Run ``app`` behind the front on the already bound ``sockets`` (``backend.sockets[i]`` serves
    ``sockets[i]``) until SIGINT/SIGTERM. ``metadata``: the app's :class:`.metadata_http.MetadataFiles`,
    answered by the front itself."""
    import uvicorn

    try:
        import uvloop
        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - depends on the installation
        loop_factory = asyncio.new_event_loop

    soft = raise_fd_limit(3 * max_connections + 256)
    # Room beside the cap: connections arriving between sweeps, the backend hops, the database, files.
    max_connections = max(16, min(max_connections, (soft - 256) // 3))
    # The backend connections are ours (pooled, one request at a time): no limits to add.
    config = uvicorn.Config(app, log_level="warning", access_log=False, proxy_headers=False, lifespan="on",
                            # longer than _POOL_IDLE: uvicorn never closes a pooled connection we may reuse
                            timeout_keep_alive=int(_POOL_IDLE * 2))

    server = uvicorn.Server(config)
    caught: list[int] = []

    def on_signal(sig: int, _frame: object) -> None:
        # Ours until uvicorn's serve() installs its own, and again when it restores ours and re-raises
        # the signal it caught: stop, and let the socket directory be removed before the process ends.
        caught.append(sig)
        server.should_exit = True

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

    async def main() -> None:
        loop = asyncio.get_running_loop()
        front = _Front(loop, metadata, header_timeout, idle_timeout, max_connections)
        ssl_ctx = _tls_context(tls) if tls else None
        servers = []
        for sock, path in zip(sockets, backend.paths, strict=True):
            # The kernel hands a connection to accept() only once its first bytes arrive (as nginx's
            # "listen … deferred"): a crowd of connections that send nothing costs no descriptor, object,
            # timer or loop turn here. One that stays silent is handed over after about this many seconds,
            # and the header timeout ends it. Those that send a byte meet the cap and the timeouts.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, max(1, math.ceil(header_timeout)))
            servers.append(await loop.create_server(
                lambda path=path: _Connection(front, path), sock=sock, backlog=4096, ssl=ssl_ctx,
                # a TLS handshake counts as headers: it too must finish within the header timeout
                ssl_handshake_timeout=header_timeout if ssl_ctx else None))
        try:
            await server.serve(sockets=backend.sockets)
        finally:
            for s in servers:
                s.close()
            for c in list(front.connections):
                c.transport.abort()

    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(main())
    finally:
        backend.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if caught:  # end as the signal would have ended the process (as uvicorn.run did)
        signal.signal(caught[0], signal.SIG_DFL)
        signal.raise_signal(caught[0])
