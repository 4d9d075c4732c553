"""Fixtures of the qx-node tests.

* ``settings`` — a node on libvirt's in-process ``test:///default`` driver, state and pool in tmp.
* ``api`` — a TestClient around the app (lifespan run: the node is connected), with ``api.hdr``.
* ``live`` — the real thing: uvicorn serving the app over TLS on 127.0.0.1 in a thread.
"""

from __future__ import annotations

import socket
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn

warnings.filterwarnings("ignore", message=".*httpx.*", category=DeprecationWarning)
from fastapi.testclient import TestClient  # noqa: E402

from qx_node.api import create_app  # noqa: E402
from qx_node.node import Node  # noqa: E402
from qx_node.settings import Settings  # noqa: E402
from qx_node.tls import ensure_cert  # noqa: E402


def make_settings(tmp: Path, uri: str = "test:///default", **kw: object) -> Settings:
    return Settings(host="127.0.0.1", port=0, libvirt_uri=uri, state_dir=tmp / "state", console_ready_dir=None,
                    pool_dir=tmp / "pool", **kw)  # type: ignore[arg-type]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


class Api(TestClient):
    node: Node
    hdr: dict[str, str]


@pytest.fixture
def api(settings: Settings) -> Iterator[Api]:
    node = Node(settings)
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
    """uvicorn with TLS in a thread, exactly as ``qx-node serve`` runs it."""

    def __init__(self, settings: Settings) -> None:
        self.port = free_port()
        key, cert = ensure_cert(settings.tls_dir)
        self.node = Node(settings)
        cfg = uvicorn.Config(create_app(self.node), host="127.0.0.1", port=self.port, ssl_keyfile=str(key),
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
