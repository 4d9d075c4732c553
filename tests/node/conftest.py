"""Fixtures of the qx-node tests.

* ``settings`` — a node on libvirt's in-process ``test:///default`` driver, state and pool in tmp, and the
  real qx-update on a host of files with a served TUF repository (``update_host``). ``make_settings``
  alone gives an unconfigured qx-update (:func:`unconfigured_qx_update`): never the build machine's own.
* ``api`` — a TestClient around the app (lifespan run: the node is connected), with ``api.hdr``.
* ``live`` — the real thing: uvicorn serving the app over TLS on 127.0.0.1 in a thread.
* ``MemoryPower`` — the host's reboot/poweroff boundary in memory (systemctl cannot run here, and
  a fuzzed ``POST /v1/host/reboot`` must never reach the machine): every node the fixtures make has one.
* ``RawClient`` — one verified TLS connection spoken to with h11, for what an HTTP library hides:
  keep-alive across requests, a response that comes before the body was sent.
"""

from __future__ import annotations

import json
import socket
import ssl
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h11
import httpx
import libvirt
import pytest
import uvicorn
from fastapi import FastAPI

warnings.filterwarnings("ignore", message=".*httpx.*", category=DeprecationWarning)
from fastapi.testclient import TestClient  # noqa: E402

from qx_node.api import create_app  # noqa: E402
from qx_node.node import Node  # noqa: E402
from qx_node.settings import Settings  # noqa: E402
from qx_node.tls import ensure_cert  # noqa: E402
from tests.updates.conftest import Host, make_host  # noqa: E402
from tests.updates.httpserver import serve  # noqa: E402
from tests.updates.tufrepo import TufRepo  # noqa: E402


def make_settings(tmp: Path, uri: str = "test:///default", **kw: object) -> Settings:
    # The host's VLANs through the console's real program, on a host root under tmp and without activation
    # (no networkd here): never the build machine's own /var/lib/quantix/config.
    kw.setdefault("host_vlan_cmd", (sys.executable, "-m", "qx_console.vmnet", "--root", str(tmp / "hostroot"),
                                    "--files-only"))
    kw.setdefault("update_cmd", unconfigured_qx_update(tmp / "qx-update"))
    return Settings(host="127.0.0.1", port=0, libvirt_uri=uri, state_dir=tmp / "state", console_ready_dir=None,
                    pool_dir=tmp / "pool", **kw)  # type: ignore[arg-type]


def qx_update_cmd(config: Path) -> tuple[str, ...]:
    """The real qx-update (this checkout's, as a process) with a settings file of the test's own."""
    return (sys.executable, "-m", "qx_update", "--config", str(config))


def unconfigured_qx_update(base: Path) -> tuple[str, ...]:
    """The real qx-update on a host of files under ``base`` that has no trusted root and no ESP: its status
    answers ('no-trusted-root'), every change fails (exit 3) and the channel is written under ``base`` —
    never the build machine's own /usr/lib/quantix/update.toml (the fuzz posts to every route)."""
    base.mkdir(parents=True, exist_ok=True)
    settings = {"server_url": "http://127.0.0.1:9/", "channel": "stable", "trusted_root": str(base / "root.json"),
                "state_dir": str(base / "state"), "esp": str(base / "esp"), "running_slot": "a",
                "host_id_file": str(base / "machine-id"), "override": str(base / "override.toml"),
                "health_url": "http://127.0.0.1:9/health"}
    lines = [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    lines += ["[slots]", f'a = "{base / "slot-a.img"}"', f'b = "{base / "slot-b.img"}"']
    (base / "update.toml").write_text("\n".join(lines) + "\n")
    return qx_update_cmd(base / "update.toml")


@dataclass
class UpdateHost:
    """qx-update's view of a host, as files (tests/updates/conftest.py's ``make_host``: slot A holds 1.0.0,
    blessed; slot B empty), and the signed TUF repository it updates from, served on 127.0.0.1."""

    host: Host
    repo: TufRepo

    @property
    def cmd(self) -> tuple[str, ...]:
        return qx_update_cmd(self.host.config)


@pytest.fixture
def update_host(tmp_path: Path) -> Iterator[UpdateHost]:
    repo = TufRepo(tmp_path / "update-repo")
    served = serve(repo.base)
    try:
        yield UpdateHost(make_host(tmp_path / "update-host", repo.root_bytes, served.url), repo)
    finally:
        served.close()


@pytest.fixture
def settings(tmp_path: Path, update_host: UpdateHost) -> Settings:
    # Every route works, the update routes too (the fuzz finds no 5xx): qx-update on a host of files with a
    # real (empty until a test publishes a release) repository.
    return make_settings(tmp_path, update_cmd=update_host.cmd)


class MemoryPower:
    """:class:`qx_node.hostops.HostPower` in memory: records the actions asked for, in order."""

    def __init__(self) -> None:
        self.actions: list[str] = []
        self.done = threading.Event()

    def reboot(self) -> None:
        self.actions.append("reboot")
        self.done.set()

    def poweroff(self) -> None:
        self.actions.append("poweroff")
        self.done.set()


class Api(TestClient):
    node: Node
    hdr: dict[str, str]


@pytest.fixture
def api(settings: Settings) -> Iterator[Api]:
    node = Node(settings, power=MemoryPower())
    with Api(create_app(node), raise_server_exceptions=False) as c:
        c.node = node
        c.hdr = {"Authorization": f"Bearer {node.token}"}
        yield c


def wait_for(cond, timeout: float = 10.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll ``cond()`` until truthy (returned) or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Live:
    url: str
    cert: Path
    token: str
    node: Node

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


class LiveServer:
    """uvicorn with TLS in a thread, exactly as ``qx-node serve`` runs it. ``customize(app)`` may add
    routes before it serves (a test's own WebSocket route, say)."""

    def __init__(self, settings: Settings, customize: Callable[[FastAPI], None] | None = None) -> None:
        self.port = free_port()
        key, cert = ensure_cert(settings.tls_dir)
        self.power = MemoryPower()
        self.node = Node(settings, power=self.power)
        app = create_app(self.node)
        if customize is not None:
            customize(app)
        cfg = uvicorn.Config(app, host="127.0.0.1", port=self.port, ssl_keyfile=str(key),
                             ssl_certfile=str(cert), log_level="warning", access_log=False,
                             timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(cfg)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.live = Live(f"https://127.0.0.1:{self.port}", cert, self.node.token, self.node)

    def __enter__(self) -> Live:
        self.thread.start()
        wait_for(lambda: self.server.started, 20, "uvicorn to start")
        return self.live

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)


@pytest.fixture
def live(settings: Settings) -> Iterator[Live]:
    with LiveServer(settings) as lv:
        yield lv


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))  # strict: invalid UTF-8 fails the test


class RawClient:
    """HTTP/1.1 over one TLS connection (verified against the node's certificate), kept open."""

    def __init__(self, live: Live, timeout: float = 10.0) -> None:
        ctx = ssl.create_default_context(cafile=str(live.cert))
        port = int(live.url.rsplit(":", 1)[1])
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        self.conn = h11.Connection(h11.CLIENT)
        self.auth = live.auth

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, method: str, target: str | bytes, headers: dict[str, str] | None = None,
              auth: bool = True) -> None:
        """Send the request line and headers only (a body, if any, follows with ``data``/``end``)."""
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        hdrs = [("host", "127.0.0.1")] + list((headers or {}).items())
        if auth:
            hdrs += list(self.auth.items())
        self.sock.sendall(self.conn.send(h11.Request(method=method, target=target, headers=hdrs)))

    def data(self, chunk: bytes) -> None:
        self.sock.sendall(self.conn.send(h11.Data(data=chunk)))

    def end(self) -> None:
        self.sock.sendall(self.conn.send(h11.EndOfMessage()))

    def response(self) -> RawResponse:
        status, headers, body = 0, {}, bytearray()
        while True:
            ev = self.conn.next_event()
            if ev is h11.NEED_DATA:
                data = self.sock.recv(65536)
                self.conn.receive_data(data)
                if not data and self.conn.their_state is not h11.DONE:
                    raise ConnectionError("the server closed the connection")
                continue
            if isinstance(ev, h11.Response):
                status = ev.status_code
                headers = {k.decode().lower(): v.decode("latin-1") for k, v in ev.headers}
            elif isinstance(ev, h11.Data):
                body += ev.data
            elif isinstance(ev, (h11.EndOfMessage, h11.ConnectionClosed)):
                return RawResponse(status, headers, bytes(body))

    def request(self, method: str, target: str | bytes, body: bytes | None = None,
                headers: dict[str, str] | None = None, auth: bool = True) -> RawResponse:
        hdrs = dict(headers or {})
        if body is not None:
            hdrs.setdefault("content-length", str(len(body)))
            hdrs.setdefault("content-type", "application/json")
        self.start(method, target, hdrs, auth)
        if body:
            self.data(body)
        self.end()
        return self.response()

    @property
    def reusable(self) -> bool:
        """The server kept the connection open for another request."""
        return self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE


# The HTTPS client of the live server and libvirt's own view of the test driver, for every test module
# that does not need its own (test_networks starts its server in a network namespace).
@pytest.fixture
def client(live: Live) -> Iterator[httpx.Client]:
    ctx = ssl.create_default_context(cafile=str(live.cert))
    with httpx.Client(base_url=live.url, verify=ctx, headers=live.auth, timeout=30) as c:
        yield c


@pytest.fixture
def lv() -> Iterator[libvirt.virConnect]:
    """libvirt's own view (the in-process test driver the node also uses)."""
    conn = libvirt.open("test:///default")
    try:
        yield conn
    finally:
        conn.close()
