"""Running the app under uvicorn with connection limits that keep ``/metadata/`` answering under attack.

uvicorn arms no timer before a connection's first request and caps nothing, so a crowd of idle or
half-open connections (no token needed) holds file descriptors until ``accept`` fails and every host's
metadata poll times out. :class:`GuardedH11Protocol` adds, per connection:

* a **header timeout**: a request's headers must be complete within ``header_timeout`` seconds of the
  connection opening (or of the previous response ending, on a kept-alive connection) — however slowly
  the bytes drip in;
* an **idle timeout** while a request body is being received: no byte for ``idle_timeout`` seconds
  closes the connection;
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

from qx_common.errors import EnvironmentError_, UserError

HEADER_TIMEOUT = 10.0
IDLE_TIMEOUT = 30.0
MAX_CONNECTIONS = 2048
_TICK = 0.5  # s between a connection's deadline checks
_SWEEP_DELAY = 0.1  # s after the cap is exceeded before the longest-waiting connections are closed
# A connection is closed by the cap only after waiting this long: a host's request, sent with its
# connection, has been read by then even while a flood of connections keeps the loop busy.
_MIN_WAIT = 1.0


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus the header/idle timeouts and the connection cap (class attributes,
    set by :func:`protocol_class`)."""

    header_timeout = HEADER_TIMEOUT
    idle_timeout = IDLE_TIMEOUT
    max_connections = MAX_CONNECTIONS
    _sweep_pending = False  # one pending sweep per server (protocol_class makes a class per server)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        now = self.loop.time()
        self._waiting_since: float | None = now  # set while the next request's headers are awaited
        self._last_data = now
        self._guard: asyncio.TimerHandle | None = self.loop.call_later(_TICK, self._check)
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
                          if isinstance(c, GuardedH11Protocol) and c._waiting_since is not None
                          and c._waiting_since < cutoff and not c.transport.is_closing()),
                         key=lambda c: c._waiting_since or 0.0)
        for c in waiting[:excess]:
            c.transport.close()
        if len(waiting) < excess:  # the rest are too young to judge: look again soon
            cls._sweep_pending = True
            self.loop.call_later(_SWEEP_DELAY, self._sweep)

    def data_received(self, data: bytes) -> None:
        self._last_data = self.loop.time()
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._waiting_since = None  # the headers are complete

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is h11.IDLE or self.conn.their_state is h11.DONE:
            self._waiting_since = self.loop.time()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._guard is not None:
            self._guard.cancel()
            self._guard = None
        super().connection_lost(exc)

    def _check(self) -> None:
        self._guard = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        if self._waiting_since is not None and now - self._waiting_since > self.header_timeout:
            self.transport.close()
            return
        if self.conn.their_state is h11.SEND_BODY and now - self._last_data > self.idle_timeout:
            self.transport.close()
            return
        self._guard = self.loop.call_later(_TICK, self._check)


def protocol_class(*, header_timeout: float, idle_timeout: float, max_connections: int) -> type[GuardedH11Protocol]:
    return type("GuardedH11ProtocolConfigured", (GuardedH11Protocol,), {
        "header_timeout": header_timeout, "idle_timeout": idle_timeout, "max_connections": max_connections})


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
          tls: tuple[str, str] | None = None) -> None:
    """Run ``app`` on the already bound ``sockets`` until SIGINT/SIGTERM."""
    import uvicorn

    soft = raise_fd_limit(2 * max_connections + 256)
    # Room beside the cap: connections arriving between sweeps, the database, metadata and target files.
    max_connections = max(16, min(max_connections, (soft - 256) // 2))
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_keep_alive=5,
                            http=protocol_class(header_timeout=header_timeout, idle_timeout=idle_timeout,
                                                max_connections=max_connections),
                            h11_max_incomplete_event_size=16 << 10,
                            ssl_certfile=tls[0] if tls else None, ssl_keyfile=tls[1] if tls else None)
    uvicorn.Server(config).run(sockets=sockets)
