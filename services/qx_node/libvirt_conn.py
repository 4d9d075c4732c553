"""One reconnecting connection to libvirtd, with libvirt's event loop on a thread of its own.

Call order: ``lv = Libvirt(uri, bus); lv.on_connect(hook); lv.on_lifecycle(listener); lv.start()``
… ``lv.conn()`` on every use … ``lv.close()``.

Invariants:

* libvirt's default event implementation is registered once per process, *before* any
  connection is opened, and one daemon thread runs ``virEventRunDefaultImpl`` (it sleeps in
  ``poll``: no busy polling). Keepalives on that loop detect a dead daemon within seconds.
* When the connection drops (libvirtd restarted, socket closed), the close callback wakes the
  reconnector thread, which reopens with exponential backoff (0.25 s … 10 s), registers the
  lifecycle and close callbacks again and runs the ``on_connect`` hooks (storage pool, the
  restart-on-crash sweep). Meanwhile ``conn()`` raises :class:`~qx_node.errors.Unavailable` (503).
* Opening is bounded: ``libvirt.open`` has no timeout, so it runs on a thread of its own and the
  reconnector gives up waiting after ``connect_timeout`` s (a libvirtd that accepts and never
  answers), reports that, and keeps waiting on that one attempt (never a second thread per retry).
  ``status()`` (health) reads no RPC and reports the latest attempt's error with its age.
* ``close()`` returns within about 4 s whatever libvirtd does (releasing a connection to a hung
  daemon is abandoned after 2 s).
* Every ``libvirtError`` is turned into one of our API errors by :func:`translate` at this
  boundary; nothing above sees a libvirt exception.
* Closing the connection never touches domains: VMs belong to libvirtd, not to us.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

import libvirt

from qx_common import log
from qx_node.errors import ApiError, BackendError, Conflict, InvalidField, NotFound, Unavailable
from qx_node.events import EventBus

_log = log.get("node.libvirt")
_loop_lock = threading.Lock()
_loop_started = False

LIFECYCLE_EVENTS = {
    0: "defined", 1: "undefined", 2: "started", 3: "suspended", 4: "resumed", 5: "stopped",
    6: "shutdown", 7: "pmsuspended", 8: "crashed",
}
# Detail names per event (libvirt's virDomainEvent*DetailType), enough for clients and for us.
_DETAILS: dict[int, dict[int, str]] = {
    2: {0: "booted", 1: "migrated", 2: "restored", 3: "from_snapshot", 4: "wakeup"},
    5: {0: "shutdown", 1: "destroyed", 2: "crashed", 3: "migrated", 4: "saved", 5: "failed",
        6: "from_snapshot"},
    8: {0: "panicked", 1: "crashloaded"},
}
STATES = {0: "nostate", 1: "running", 2: "blocked", 3: "paused", 4: "shutdown", 5: "shutoff",
          6: "crashed", 7: "pmsuspended"}

Lifecycle = Callable[[libvirt.virConnect, libvirt.virDomain, str, str], None]


def _ignore_errors(_ctx: object, _err: object) -> None:
    """libvirt prints every error to stderr by default; we report them ourselves."""


def ensure_event_loop() -> None:
    global _loop_started
    with _loop_lock:
        if _loop_started:
            return
        libvirt.registerErrorHandler(_ignore_errors, None)
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _loop_started = True


def _code(name: str) -> int | None:
    return getattr(libvirt, name, None)


_NOT_FOUND = {_code(n) for n in ("VIR_ERR_NO_DOMAIN", "VIR_ERR_NO_STORAGE_VOL", "VIR_ERR_NO_STORAGE_POOL",
                                 "VIR_ERR_NO_NETWORK", "VIR_ERR_NO_NODE_DEVICE",
                                 "VIR_ERR_NO_DOMAIN_SNAPSHOT")} - {None}
# OPERATION_UNSUPPORTED: possible in general, not for this object as it is (an internal snapshot of a
# raw disk, say): the request conflicts with the VM's configuration, not a libvirt failure.
_CONFLICT = {_code(n) for n in ("VIR_ERR_OPERATION_INVALID", "VIR_ERR_DOM_EXIST", "VIR_ERR_STORAGE_VOL_EXIST",
                                "VIR_ERR_STORAGE_POOL_BUILT", "VIR_ERR_OPERATION_TIMEOUT",
                                "VIR_ERR_OPERATION_UNSUPPORTED", "VIR_ERR_SNAPSHOT_EXIST")} - {None}
_INVALID = {_code(n) for n in ("VIR_ERR_XML_ERROR", "VIR_ERR_INVALID_ARG", "VIR_ERR_CONFIG_UNSUPPORTED",
                               "VIR_ERR_XML_DETAIL", "VIR_ERR_OVERFLOW", "VIR_ERR_ARGUMENT_UNSUPPORTED")} - {None}
_GONE = {_code(n) for n in ("VIR_ERR_NO_CONNECT", "VIR_ERR_RPC", "VIR_ERR_INVALID_CONN",
                            "VIR_ERR_AUTH_FAILED", "VIR_ERR_AUTH_UNAVAILABLE")} - {None}
# Drivers report some state conflicts under generic codes (INTERNAL_ERROR, OPERATION_FAILED): the
# test driver says "Domain 'x' is already running", "domain 'x' already exists with uuid …".
_CONFLICT_WORDS = ("not running", "is already", "already running", "already exists")


def translate(e: libvirt.libvirtError, what: str) -> ApiError | Unavailable | BackendError:
    """Map a libvirt error about ``what`` (e.g. "VM 'web'") to an API error with a clear message."""
    code = e.get_error_code()
    msg = e.get_error_message() or str(e)
    if code in _NOT_FOUND:
        return NotFound(f"{what} does not exist", hint=msg)
    if code in _CONFLICT:
        return Conflict(f"{what}: {msg}")
    if code in _INVALID:
        return InvalidField(f"{what}: libvirt refused the configuration: {msg}")
    if code in _GONE or (code == _code("VIR_ERR_SYSTEM_ERROR") and "connect" in msg.lower()):
        return Unavailable(f"libvirtd is not reachable: {msg}", hint="qx-node reconnects by itself; retry shortly")
    if any(w in msg for w in _CONFLICT_WORDS):
        return Conflict(f"{what}: {msg}")
    return BackendError(f"{what}: libvirt failed: {msg}")


@contextlib.contextmanager
def mapped(what: str) -> Iterator[None]:
    """``with mapped("VM 'x'"): dom.create()`` — libvirt errors become API errors."""
    try:
        yield
    except libvirt.libvirtError as e:
        raise translate(e, what) from e


def _release(c: libvirt.virConnect, ids: list[int]) -> None:
    for cid in ids:
        with contextlib.suppress(libvirt.libvirtError):
            c.domainEventDeregisterAny(cid)
    with contextlib.suppress(libvirt.libvirtError):
        c.unregisterCloseCallback()
    with contextlib.suppress(libvirt.libvirtError):
        c.close()


def _release_bounded(c: libvirt.virConnect, ids: list[int], timeout: float = 2.0) -> None:
    """Release a connection, waiting at most ``timeout`` s: closing one to a hung libvirtd blocks."""
    t = threading.Thread(target=_release, args=(c, ids), name="libvirt-release", daemon=True)
    t.start()
    t.join(timeout)


def _version(v: int) -> str:
    return f"{v // 1_000_000}.{(v // 1000) % 1000}.{v % 1000}"


class _Attempt:
    """One ``libvirt.open`` on a daemon thread of its own: libvirt has no connect timeout, and a
    libvirtd that accepts and never answers would block its caller for ever. The caller waits as
    long as it wants; an attempt that finishes late is still used (or closed if nobody wants it)."""

    def __init__(self, uri: str, on_done: Callable[[], None], abandoned: threading.Event) -> None:
        self.uri = uri
        self.started = time.monotonic()
        self.done = threading.Event()
        self.conn: libvirt.virConnect | None = None
        self.error: libvirt.libvirtError | None = None
        self._on_done = on_done
        self._abandoned = abandoned
        threading.Thread(target=self._run, name="libvirt-open", daemon=True).start()

    def _run(self) -> None:
        try:
            self.conn = libvirt.open(self.uri)
        except libvirt.libvirtError as e:
            self.error = e
        if self._abandoned.is_set() and self.conn is not None:
            with contextlib.suppress(libvirt.libvirtError):
                self.conn.close()
            self.conn = None
        self.done.set()
        self._on_done()


class _ConnectTimeout(Exception):
    pass


class Libvirt:
    def __init__(self, uri: str, bus: EventBus, *, min_backoff: float = 0.25, max_backoff: float = 10.0,
                 connect_timeout: float = 10.0) -> None:
        self.uri = uri
        self.bus = bus
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self.connect_timeout = connect_timeout
        self._conn: libvirt.virConnect | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()  # the reconnector has work (a drop, a stop)
        self._kick = threading.Event()  # an open attempt finished, or we are stopping
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._hooks: list[Callable[[libvirt.virConnect], None]] = []
        self._listeners: list[Lifecycle] = []
        self._cb_ids: list[int] = []
        self._stale: list[tuple[libvirt.virConnect, list[int]]] = []
        self._thread: threading.Thread | None = None
        self._attempt: _Attempt | None = None
        self._error = ("not connected yet", time.monotonic())
        self.version: str | None = None  # libvirtd's version, read once per connection
        self.connects = 0

    @property
    def last_error(self) -> str:
        return self._error[0]

    def _set_error(self, message: str) -> None:
        self._error = (message, time.monotonic())

    def on_connect(self, hook: Callable[[libvirt.virConnect], None]) -> None:
        self._hooks.append(hook)

    def on_lifecycle(self, listener: Lifecycle) -> None:
        self._listeners.append(listener)

    def start(self, wait: float = 5.0) -> None:
        """Start the reconnector; wait up to ``wait`` s for the first connection (not fatal)."""
        ensure_event_loop()
        self._thread = threading.Thread(target=self._reconnector, name="libvirt-reconnect", daemon=True)
        self._wake.set()
        self._thread.start()
        self._connected.wait(wait)

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def status(self) -> tuple[bool, str]:
        """(connected, detail) for health: never an RPC, never an error older than the last attempt."""
        if self._conn is not None and self.version is not None:
            return True, f"libvirt {self.version}"
        message, at = self._error
        detail = f"not connected: {message} ({time.monotonic() - at:.0f} s ago)"
        a = self._attempt
        if a is not None and not a.done.is_set():
            detail += f"; a connection attempt has been waiting {time.monotonic() - a.started:.0f} s for an answer"
        return False, detail

    def conn(self) -> libvirt.virConnect:
        c = self._conn
        if c is None:
            raise Unavailable(f"libvirtd ({self.uri}) is not connected: {self.last_error}",
                              hint="qx-node reconnects by itself; retry shortly")
        return c

    def close(self) -> None:
        """Stop reconnecting and release the connection; bounded even when libvirtd hangs."""
        self._stop.set()
        self._wake.set()
        self._kick.set()
        if self._thread is not None:
            self._thread.join(2)
        self._drop(reason="qx-node stopping", reconnect=False)

    # -- internals -----------------------------------------------------------------------------
    def _reconnector(self) -> None:
        backoff = self._min_backoff
        while not self._stop.is_set():
            self._wake.wait()
            if self._stop.is_set():
                return
            while self._stale:
                _release_bounded(*self._stale.pop())
            if self._conn is not None:
                self._wake.clear()
                continue
            try:
                self._open()
            except (libvirt.libvirtError, _ConnectTimeout) as e:
                if self._stop.is_set():
                    return
                if isinstance(e, libvirt.libvirtError):
                    self._set_error(e.get_error_message() or str(e))
                else:
                    self._set_error(str(e))
                _log.warning("libvirt: cannot connect to %s (%s); retrying in %.1f s", self.uri, self.last_error, backoff)
                self._pause(backoff)
                backoff = min(backoff * 2, self._max_backoff)
                continue
            backoff = self._min_backoff
            self._wake.clear()

    def _pause(self, seconds: float) -> None:
        """Sleep, waking early when we stop or when a pending open attempt finishes."""
        a = self._attempt
        deadline = time.monotonic() + seconds
        while not self._stop.is_set() and (remaining := deadline - time.monotonic()) > 0:
            if a is not None and a.done.is_set():
                return
            self._kick.wait(remaining)
            self._kick.clear()

    def _open_bounded(self) -> libvirt.virConnect:
        a = self._attempt
        if a is None:
            a = self._attempt = _Attempt(self.uri, self._kick.set, self._stop)
        deadline = a.started + self.connect_timeout
        while not a.done.is_set():
            remaining = deadline - time.monotonic()
            if self._stop.is_set():
                raise _ConnectTimeout("qx-node is stopping")
            if remaining <= 0:
                raise _ConnectTimeout(f"libvirtd accepted the connection but has not answered within "
                                      f"{self.connect_timeout:g} s")
            self._kick.wait(remaining)
            self._kick.clear()
        self._attempt = None
        if a.error is not None:
            raise a.error
        assert a.conn is not None
        return a.conn

    def _open(self) -> None:
        c = self._open_bounded()
        try:
            c.setKeepAlive(5, 3)
        except libvirt.libvirtError:
            pass  # local drivers (test:///) have no keepalive
        try:
            version = _version(c.getLibVersion())
            ids = [c.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None)]
        except libvirt.libvirtError:
            _release_bounded(c, [])
            raise
        try:
            c.registerCloseCallback(self._on_close, None)
        except libvirt.libvirtError:
            pass
        with self._lock:
            self._conn, self._cb_ids, self.version = c, ids, version
        self.connects += 1
        self._set_error("")
        _log.info("libvirt: connected to %s", self.uri)
        for hook in self._hooks:
            try:
                hook(c)
            except Exception as e:  # noqa: BLE001 - a failing hook must not stop the daemon
                _log.error("libvirt: on-connect hook %s failed: %s", getattr(hook, "__name__", hook), e)
        self._connected.set()
        self.bus.publish({"type": "connection", "state": "connected", "uri": self.uri})

    def _on_close(self, _conn: libvirt.virConnect, reason: int, _opaque: object) -> None:
        self._drop(reason=f"connection closed (reason {reason})", reconnect=True, closed=True)

    def _drop(self, *, reason: str, reconnect: bool, closed: bool = False) -> None:
        with self._lock:
            c, self._conn, ids, self._cb_ids = self._conn, None, self._cb_ids, []
        if c is None:
            return
        self._connected.clear()
        self.version = None
        self._set_error(reason)
        if closed:
            # We are on libvirt's event thread, inside its close callback: closing here could
            # deadlock. The reconnector releases the dead connection.
            self._stale.append((c, ids))
        else:
            _release_bounded(c, ids)
        _log.warning("libvirt: disconnected from %s: %s", self.uri, reason)
        self.bus.publish({"type": "connection", "state": "disconnected", "uri": self.uri, "reason": reason})
        if reconnect and not self._stop.is_set():
            self._wake.set()

    def _on_lifecycle(self, conn: libvirt.virConnect, dom: libvirt.virDomain, event: int, detail: int,
                      _opaque: object) -> None:
        ev = LIFECYCLE_EVENTS.get(event, str(event))
        det = _DETAILS.get(event, {}).get(detail, str(detail))
        try:
            name = dom.name()
            state = STATES.get(dom.state()[0], "unknown") if event != 1 else "undefined"
        except libvirt.libvirtError:
            return
        self.bus.publish_lifecycle(name, ev, det, state)
        for listener in self._listeners:
            try:
                listener(conn, dom, ev, det)
            except Exception as e:  # noqa: BLE001 - never let a listener kill libvirt's event thread
                _log.error("libvirt: lifecycle listener failed: %s", e)
