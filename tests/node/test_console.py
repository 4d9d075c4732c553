"""The console proxy on the real server (uvicorn, TLS) and test:///default: one-time tickets and the
VNC WebSocket, against a stand-in VNC server on loopback (test:/// keeps a VM's fixed VNC port).
The serial console is proven against a real guest in test_libvirtd.py."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import libvirt
import pytest
import websocket  # websocket-client

from tests.node.conftest import Live, free_port, wait_for


class FakeVnc:
    """Greets like an RFB server, then echoes: enough to prove bytes flow both ways."""

    GREETING = b"RFB 003.008\n"

    def __init__(self) -> None:
        self.port = free_port()
        self.sock = socket.create_server(("127.0.0.1", self.port))
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._echo, args=(c,), daemon=True).start()

    def _echo(self, c: socket.socket) -> None:
        try:
            c.sendall(self.GREETING)
            while data := c.recv(65536):
                c.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        for s in (self.sock, *self.conns):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)  # wakes the accept() blocked in the thread; close alone would not
            s.close()


@pytest.fixture
def fake_vnc() -> Iterator[FakeVnc]:
    f = FakeVnc()
    yield f
    f.close()


@pytest.fixture
def vnc_vm(fake_vnc: FakeVnc) -> Iterator[str]:
    conn = libvirt.open("test:///default")
    dom = conn.defineXML(f"<domain type='test'><name>vncvm</name><memory unit='MiB'>64</memory><os><type>hvm</type>"
                         f"</os><devices><graphics type='vnc' port='{fake_vnc.port}' autoport='no' listen='127.0.0.1'/>"
                         f"</devices></domain>")
    dom.create()
    try:
        yield "vncvm"
    finally:
        if dom.isActive():
            dom.destroy()
        dom.undefine()
        conn.close()


def _ws(live: Live, url: str, **kw: Any) -> websocket.WebSocket:
    sslopt = {"cert_reqs": ssl.CERT_REQUIRED, "ca_certs": str(live.cert)}
    return websocket.create_connection(live.url.replace("https://", "wss://") + url, sslopt=sslopt, timeout=10, **kw)


def _refused(live: Live, url: str, **kw: Any) -> tuple[int, dict[str, Any]]:
    with pytest.raises(websocket.WebSocketBadStatusException) as e:
        _ws(live, url, **kw)
    return e.value.status_code, json.loads(e.value.resp_body)


def _ticket(client: httpx.Client, vm: str, kind: str = "vnc") -> dict[str, Any]:
    r = client.post(f"/v1/vms/{vm}/console", params={"kind": kind})
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def test_vnc_through_a_one_time_ticket(live: Live, client: httpx.Client, vnc_vm: str) -> None:
    t = _ticket(client, vnc_vm)
    assert t["url"] == f"/v1/vms/{vnc_vm}/console/vnc?ticket={t['ticket']}" and t["expires_in"] == 30
    ws = _ws(live, t["url"], subprotocols=["binary"])  # as noVNC opens it: no Authorization header
    try:
        assert ws.getsubprotocol() == "binary"
        assert ws.recv() == FakeVnc.GREETING
        ws.send_binary(b"\x03\x00 a key")
        assert ws.recv() == b"\x03\x00 a key"
    finally:
        ws.close()
    status, body = _refused(live, t["url"])  # used up
    assert status == 401 and body["field"] == "Authorization"


def test_tickets_are_bound_to_one_console_and_expire(live: Live, client: httpx.Client, vnc_vm: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    t = _ticket(client, vnc_vm)
    for url in (f"/v1/vms/{vnc_vm}/console/serial?ticket={t['ticket']}", f"/v1/vms/test/console/vnc?ticket={t['ticket']}",
                f"/v1/vms/{vnc_vm}/console/vnc?ticket=made-up", f"/v1/vms/{vnc_vm}/console/vnc",
                f"/v1/events?ticket={_ticket(client, vnc_vm)['ticket']}"):
        assert _refused(live, url)[0] == 401, url
    # Presented anywhere, a ticket is used up: one that leaked and was tried elsewhere is worthless.
    assert _refused(live, t["url"])[0] == 401
    ws = _ws(live, _ticket(client, vnc_vm)["url"])
    assert ws.recv() == FakeVnc.GREETING
    ws.close()
    monkeypatch.setattr(live.node.tickets, "ttl", 0.2)
    late = _ticket(client, vnc_vm)
    assert late["expires_in"] == 0.2
    time.sleep(0.4)
    assert _refused(live, late["url"])[0] == 401
    # The token itself also opens a console (scripts on the host need no ticket).
    ws = _ws(live, f"/v1/vms/{vnc_vm}/console/vnc", header=list(f"{k}: {v}" for k, v in live.auth.items()))
    assert ws.recv() == FakeVnc.GREETING
    ws.close()


def test_consoles_that_cannot_be_opened(live: Live, client: httpx.Client, vnc_vm: str, fake_vnc: FakeVnc) -> None:
    r = client.post("/v1/vms/nope/console")
    assert r.status_code == 404
    r = client.post(f"/v1/vms/{vnc_vm}/console", params={"kind": "spice"})
    assert r.status_code == 422 and r.json()["field"] == "kind"
    r = client.post(f"/v1/vms/{vnc_vm}/console", params={"kinds": "vnc"})
    assert r.status_code == 422 and r.json()["field"] == "kinds"
    r = client.post("/v1/vms/test/console")  # the test driver's own VM has no VNC
    assert r.status_code == 409 and "no VNC" in r.json()["error"], r.text
    r = client.post("/v1/vms?wait=true", json={"name": "off", "memory_mib": 64, "start": False})
    assert r.status_code == 201
    r = client.post("/v1/vms/off/console")
    assert r.status_code == 409 and "not running" in r.json()["error"]
    # A ticket taken while the VM ran, used after its VNC server went away: refused at the handshake.
    t = _ticket(client, vnc_vm)
    fake_vnc.close()
    status, body = _refused(live, t["url"])
    assert status == 503 and "does not answer" in body["error"], body


def test_a_console_ends_when_the_node_stops(live: Live, client: httpx.Client, vnc_vm: str) -> None:
    ws = _ws(live, _ticket(client, vnc_vm)["url"])
    assert ws.recv() == FakeVnc.GREETING
    live.node.bus.shutdown()  # what SIGTERM does first
    wait_for(lambda: _closed(ws), 5, "the console WebSocket to be closed by the node")


def _closed(ws: websocket.WebSocket) -> bool:
    try:
        op, _data = ws.recv_data(control_frame=True)
    except (websocket.WebSocketConnectionClosedException, OSError):
        return True
    return op == websocket.ABNF.OPCODE_CLOSE
