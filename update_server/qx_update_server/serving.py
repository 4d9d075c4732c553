"""Running the app under uvicorn with connection limits that keep ``/metadata/`` answering under attack.

uvicorn arms no timer before a connection's first request and caps nothing, so a crowd of idle or
half-open connections (no token needed) holds file descriptors until ``accept`` fails and every host's
metadata poll times out. :class:`_Guard` adds to uvicorn's HTTP protocol (httptools' C parser when
the "server" extra is installed, else h11), per connection:

* a **header timeout**: a request's headers must be complete within ``header_timeout`` seconds of the
  connection opening (or of the previous response ending, on a kept-alive connection) — however slowly
  the bytes drip in;
* an **idle timeout** while a request body is being received: no byte for ``idle_timeout`` seconds
  closes the connection;
* a **header size limit**: more than :data:`MAX_HEADER_BYTES` before the headers end closes the
  connection (h11 is given the same limit; httptools has none of its own);
* a **connection cap**: beyond ``max_connections`` open connections, the ones waiting longest for
  request headers are closed, a moment later (they have sent nothing the server could answer, while a
  host's connection has sent its request at once). Connections busy with a request are never closed
  by the cap: the timeouts end the ones that stall. Between sweeps the count may exceed the cap by
  what arrives in :data:`_SWEEP_DELAY`, which the descriptor limit leaves room for.

Call order: :func:`bind` (turns "address in use" into a clear error before anything starts) →
:func:`serve`. :func:`raise_fd_limit` lifts the soft descriptor limit so the cap, not ``EMFILE``, is
what bounds connections.
"""

from __future__ import annotations

import asyncio
import errno
import resource
import socket
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

try:  # the C parser, from the "server" extra (requirements.lock); without it, h11
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - depends on the installation
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

from qx_common.errors import EnvironmentError_, UserError
from qx_update_server.metadata_http import RAW_TARGET, MetadataFiles, raw_response

HEADER_TIMEOUT = 10.0
IDLE_TIMEOUT = 30.0
MAX_CONNECTIONS = 2048
_TICK = 0.5  # s: the shortest wait before a connection's deadline is checked again
_SWEEP_DELAY = 0.1  # s after the cap is exceeded before the longest-waiting connections are closed
# A connection is closed by the cap only after waiting this long: a host's request, sent with its
# connection, has been read by then even while a flood of connections keeps the loop busy.
_MIN_WAIT = 1.0
MAX_HEADER_BYTES = 16 << 10  # a request's headers (h11 is given the same limit); more closes the connection


class _Guard:
    """The header/idle timeouts and the connection cap, for either of uvicorn's HTTP protocols.

    Mixed in before the protocol class (class attributes set by :func:`protocol_class`). The protocol
    subclass says when a request's headers are complete (:meth:`_headers_done`) and whether a request body
    is being received (:meth:`_receiving_body`)."""

    header_timeout = HEADER_TIMEOUT
    idle_timeout = IDLE_TIMEOUT
    max_connections = MAX_CONNECTIONS
    _sweep_pending = False  # one pending sweep per server (protocol_class makes a class per server)
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    connections: set[Any]

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[misc]
        now = self.loop.time()
        self._waiting_since: float | None = now  # set while the next request's headers are awaited
        self._header_bytes = 0  # received while waiting for headers (httptools has no limit of its own)
        self._last_data = now
        self._guard: asyncio.TimerHandle | None = None
        self._arm()
        cls = type(self)
        if len(self.connections) > self.max_connections and not cls._sweep_pending:
            # Not at once: asyncio accepts a whole batch of connections before it reads from any of
            # them, so a host's complete request may not have been read yet. A moment later every
            # connection that sent a request has left the "waiting" state and is safe from eviction.
            cls._sweep_pending = True
            self.loop.call_later(_SWEEP_DELAY, self._sweep)

    def _sweep(self) -> None:
        """Close the connections waiting longest for request headers until at most max_connections remain."""
        cls = type(self)
        cls._sweep_pending = False
        excess = len(self.connections) - self.max_connections
        if excess <= 0:
            return
        cutoff = self.loop.time() - _MIN_WAIT
        waiting = sorted((c for c in self.connections
                          if isinstance(c, _Guard) and c._waiting_since is not None
                          and c._waiting_since < cutoff and not c.transport.is_closing()),
                         key=lambda c: c._waiting_since or 0.0)
        for c in waiting[:excess]:
            c.transport.close()
        if len(waiting) < excess:  # the rest are too young to judge: look again soon
            cls._sweep_pending = True
            self.loop.call_later(_SWEEP_DELAY, self._sweep)

    def data_received(self, data: bytes) -> None:
        self._last_data = self.loop.time()
        super().data_received(data)  # type: ignore[misc]
        if self._waiting_since is not None:
            if self._headers_done():
                self._waiting_since = None
                self._header_bytes = 0
            else:
                self._header_bytes += len(data)
                if self._header_bytes > MAX_HEADER_BYTES and not self.transport.is_closing():
                    self.transport.close()  # headers larger than any client of ours sends

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        if not self._receiving_body():
            self._waiting_since = self.loop.time()
            self._header_bytes = 0

    def connection_lost(self, exc: Exception | None) -> None:
        if self._guard is not None:
            self._guard.cancel()
            self._guard = None
        super().connection_lost(exc)  # type: ignore[misc]

    def _arm(self) -> None:
        """One timer per connection, at its next deadline (not a periodic tick: with thousands of idle
        connections, ticks alone kept the loop busy and delayed every host's metadata request). The
        deadline only moves later as the connection makes progress, so an early wake-up re-arms."""
        now = self.loop.time()
        if self._waiting_since is not None:
            due = self._waiting_since + self.header_timeout
        elif self._receiving_body():
            due = self._last_data + self.idle_timeout
        else:  # a request being answered: look again later (its body, if any, may start to stall)
            due = now + min(self.header_timeout, self.idle_timeout)
        self._guard = self.loop.call_at(max(due + 0.01, now + _TICK), self._check)

    def _check(self) -> None:
        self._guard = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        if self._waiting_since is not None and now - self._waiting_since > self.header_timeout:
            self.transport.close()
            return
        if self._receiving_body() and now - self._last_data > self.idle_timeout:
            self.transport.close()
            return
        self._arm()

    def _headers_done(self) -> bool:
        raise NotImplementedError

    def _receiving_body(self) -> bool:
        raise NotImplementedError


class GuardedH11Protocol(_Guard, H11Protocol):
    """uvicorn's pure-Python h11 protocol with the guard (when httptools is not installed)."""

    def _headers_done(self) -> bool:
        return self.conn.their_state is not h11.IDLE

    def _receiving_body(self) -> bool:
        return self.conn.their_state is h11.SEND_BODY


class GuardedHttpToolsProtocol(_Guard, HttpToolsProtocol or H11Protocol):  # type: ignore[misc]
    """uvicorn's httptools (C parser) protocol with the guard, and the metadata raw path. Only used when
    httptools is installed.

    **Raw path**: a ``GET``/``HEAD`` whose target is exactly ``/metadata/<name>`` (no body) is answered
    here, from the parser's callbacks, with one write (:func:`.metadata_http.raw_response`) — no ASGI
    scope, request cycle or task. It is taken only while no ASGI request of the connection is pending
    (``_asgi_pending``), so responses keep the requests' order, and while the connection's write buffer is
    empty, so unread answers cannot pile up (uvicorn's flow control handles those); otherwise the request
    goes to uvicorn and :class:`.metadata_http.MetadataFastPath` answers it the same. The connection's bookkeeping after the
    response (keep-alive timer, the guard's header timeout) is uvicorn's own ``on_response_complete``.
    What this reads of the parser is httptools' public API (``get_method``, ``get_http_version``,
    ``should_keep_alive``); the URL and headers are taken from the callbacks as they pass through.
    """

    _in_request = False  # between a request's headers and its end
    metadata: MetadataFiles | None = None  # set by protocol_class; None: every request goes to ASGI
    _asgi_pending = 0  # requests handed to uvicorn whose response is not complete yet
    _raw: bytes | None = None  # the metadata name of the request being answered by the raw path
    _target = b""
    _if_none_match: bytes | None = None
    _has_body = False

    def on_message_begin(self) -> None:
        # uvicorn's own on_message_begin/on_url/on_header (its per-request scope) run only for a request
        # that goes to ASGI: replayed, in order, by on_headers_complete. A raw answer costs none of them.
        self._headers_seen = False
        self._target = b""
        self._header_list: list[tuple[bytes, bytes]] = []
        self._if_none_match = None
        self._has_body = False

    def on_url(self, url: bytes) -> None:
        self._target += url  # bounded by the guard's header limit, like the headers

    def on_header(self, name: bytes, value: bytes) -> None:
        lname = name.lower()
        if lname == b"if-none-match":
            self._if_none_match = value if self._if_none_match is None else self._if_none_match + b"," + value
        elif lname == b"transfer-encoding" or (lname == b"content-length" and value.strip() != b"0"):
            self._has_body = True
        self._header_list.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_request = True
        self._headers_seen = True
        # Only onto an empty write buffer: answers a client does not read go through uvicorn's flow control
        # (the raw path has none of its own). Defensive: today the kernel's socket buffers absorb a read
        # chunk's answers and the guard's header limit drops a connection whose chunk ends mid-request.
        if (self.metadata is not None and not self._asgi_pending and not self._has_body
                and not self.transport.get_write_buffer_size()):
            m = RAW_TARGET.match(self._target)
            if (m is not None and self.parser.get_method() in (b"GET", b"HEAD")
                    and not self.parser.should_upgrade()):
                self._raw = m.group(1)  # answered in on_message_complete, right after (no body)
                return
        super().on_message_begin()
        super().on_url(self._target)
        for name, value in self._header_list:
            super().on_header(name, value)
        self._asgi_pending += 1
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_request = False
        name, self._raw = self._raw, None
        if name is None:
            super().on_message_complete()
            return
        assert self.metadata is not None
        keep_alive = self.parser.should_keep_alive() and self.parser.get_http_version() != "1.0"
        self.transport.write(raw_response(self.metadata, name, head=self.parser.get_method() == b"HEAD",
                                          if_none_match=self._if_none_match, keep_alive=keep_alive))
        if not keep_alive:
            self.transport.close()
        self._raw_done = True
        try:
            self.on_response_complete()
        finally:
            self._raw_done = False

    _raw_done = False

    def on_response_complete(self) -> None:
        if not self._raw_done and self._asgi_pending:
            self._asgi_pending -= 1
        super().on_response_complete()

    def _headers_done(self) -> bool:
        return getattr(self, "_headers_seen", False)

    def _receiving_body(self) -> bool:
        return self._in_request


def protocol_class(*, header_timeout: float, idle_timeout: float, max_connections: int,
                   metadata: MetadataFiles | None = None) -> type[_Guard]:
    """A guarded protocol class for one server: httptools' when it is installed, else h11's.
    ``metadata``: the files the httptools protocol answers ``/metadata/…`` from without ASGI."""
    base: type[_Guard] = GuardedHttpToolsProtocol if HttpToolsProtocol is not None else GuardedH11Protocol
    return type("GuardedProtocolConfigured", (base,), {
        "header_timeout": header_timeout, "idle_timeout": idle_timeout, "max_connections": max_connections,
        "metadata": metadata})


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


def serve(app: Any, sockets: list[socket.socket], *, header_timeout: float = HEADER_TIMEOUT,
          idle_timeout: float = IDLE_TIMEOUT, max_connections: int = MAX_CONNECTIONS,
          tls: tuple[str, str] | None = None, metadata: MetadataFiles | None = None) -> None:
    """Run ``app`` on the already bound ``sockets`` until SIGINT/SIGTERM. ``metadata``: the app's
    :class:`.metadata_http.MetadataFiles`, answered from the HTTP parser (see GuardedHttpToolsProtocol)."""
    import uvicorn

    soft = raise_fd_limit(2 * max_connections + 256)
    # Room beside the cap: connections arriving between sweeps, the database, metadata and target files.
    max_connections = max(16, min(max_connections, (soft - 256) // 2))
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_keep_alive=5,
                            http=protocol_class(header_timeout=header_timeout, idle_timeout=idle_timeout,
                                                max_connections=max_connections, metadata=metadata),
                            # no X-Forwarded-* rewriting: nothing here reads the client address, and it
                            # was one more ASGI wrapper on every request
                            proxy_headers=False,
                            h11_max_incomplete_event_size=MAX_HEADER_BYTES,
                            ssl_certfile=tls[0] if tls else None, ssl_keyfile=tls[1] if tls else None)
    uvicorn.Server(config).run(sockets=sockets)
