"""VM consoles through the API: short-lived tickets, and the two proxies behind them.

A browser cannot send ``Authorization`` on a WebSocket, so a client with the token asks for a
ticket (``POST /v1/vms/{name}/console?kind=vnc|serial``) and opens the WebSocket with
``?ticket=...`` within ``TICKET_SECONDS``. A ticket is random (256 bits), names one VM and one kind
(it is bound to the exact WebSocket path) and is used up by the handshake that presents it.
:class:`~qx_node.auth.BearerAuth` asks :meth:`Tickets.admit` about every WebSocket handshake
without the token; the routes never see an unauthenticated one.

* ``vnc``: the WebSocket carries the VM's VNC (RFB) byte stream, as noVNC expects (binary frames,
  subprotocol ``binary`` when asked). qx-node connects to the VM's VNC server on loopback only;
  nothing new listens anywhere.
* ``serial``: the VM's first serial port (its host pty, as ``virsh console`` uses): guest output as
  binary frames, client frames (text or binary) as input.
"""

from __future__ import annotations

import secrets
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from qx_node.errors import Conflict, InvalidField
from qx_node.libvirt_conn import mapped

TICKET_SECONDS = 30.0
KINDS = ("vnc", "serial")
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}
_ANY = {"0.0.0.0", "::", ""}


@dataclass(frozen=True)
class _Ticket:
    path: str
    expires: float


class Tickets:
    def __init__(self, ttl: float = TICKET_SECONDS) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._tickets: dict[str, _Ticket] = {}

    @staticmethod
    def path(vm: str, kind: str) -> str:
        return f"/v1/vms/{vm}/console/{kind}"

    def issue(self, vm: str, kind: str) -> str:
        ticket = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            self._tickets = {k: t for k, t in self._tickets.items() if t.expires > now}  # forget stale ones
            self._tickets[ticket] = _Ticket(self.path(vm, kind), now + self.ttl)
        return ticket

    def admit(self, scope: dict[str, Any]) -> bool:
        """A WebSocket handshake carrying a valid ticket for its own path (the ticket is used up)."""
        if scope.get("type") != "websocket":
            return False
        values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("ticket", [])
        if len(values) != 1:
            return False
        with self._lock:
            t = self._tickets.pop(values[0], None)
        return t is not None and t.expires > time.monotonic() and t.path == scope.get("path")


@dataclass(frozen=True)
class Endpoint:
    kind: str
    host: str = ""  # vnc: where to connect (loopback)
    port: int = 0
    pty: str = ""  # serial: the host pty


def endpoint(vms: Any, name: str, kind: str) -> Endpoint:
    """Where the running VM's console is; 409 when it has none now (not running, no such device,
    a VNC server that is not on loopback)."""
    if kind not in KINDS:
        raise InvalidField(f"kind: '{kind}' is not one of {', '.join(KINDS)}", field="kind")
    dom = vms._dom(name)
    with mapped(f"VM '{name}'"):
        state = dom.state()[0]
        if not vms._running(dom):
            raise Conflict(f"VM '{name}' is not running: it has no console now", hint="start it first")
        root = ET.fromstring(dom.XMLDesc(0))
    if kind == "serial":
        src = root.find("devices/serial[@type='pty']/source")
        if src is None:
            src = root.find("devices/console[@type='pty']/source")
        path = src.get("path") if src is not None else None
        if not path:
            raise Conflict(f"VM '{name}' has no serial console on a host pty (state {state})")
        return Endpoint("serial", pty=path)
    g = root.find("devices/graphics[@type='vnc']")
    port = g.get("port", "-1") if g is not None else "-1"
    if g is None or not port.isdigit() or int(port) <= 0:
        raise Conflict(f"VM '{name}' has no VNC console")
    listen = g.get("listen") or ""
    if listen in _ANY:
        listen = "127.0.0.1"
    if listen not in _LOOPBACK:
        raise Conflict(f"VM '{name}': its VNC server listens on {listen}, not on loopback",
                       hint="qx-node proxies loopback consoles only; set the VM's VNC listen address to 127.0.0.1")
    return Endpoint("vnc", host=listen, port=int(port))
