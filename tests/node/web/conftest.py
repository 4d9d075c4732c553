"""Fixtures of the web client's tests: a live qx-node (uvicorn, TLS, libvirt test:///default) whose root
password is checked against a shadow file of the test's own (a real yescrypt hash made by libcrypt) and
whose lockdown file is one the test can create; and HTTPS clients that keep cookies like a browser."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from qx_common.passwords import hash_password
from qx_node.settings import Settings
from tests.node.conftest import Live, LiveServer

PASSWORD = "correct-horse-7"


@dataclass
class WebLive:
    live: Live
    shadow: Path
    lockdown: Path

    @property
    def url(self) -> str:
        return self.live.url

    def client(self, source: str = "127.0.0.1", origin: bool = True) -> httpx.Client:
        """A cookie-keeping client (no Authorization header), from ``source`` (any 127.0.0.0/8 address)."""
        ctx = ssl.create_default_context(cafile=str(self.live.cert))
        headers = {"Origin": self.url} if origin else {}
        return httpx.Client(base_url=self.url, verify=ctx, timeout=30, headers=headers,
                            transport=httpx.HTTPTransport(verify=ctx, local_address=source))


@pytest.fixture
def web(settings: Settings, tmp_path: Path) -> Iterator[WebLive]:
    shadow = tmp_path / "shadow"
    shadow.write_text(f"root:{hash_password(PASSWORD)}:20000:0:99999:7:::\ndaemon:*:20000:0:99999:7:::\n")
    lockdown = tmp_path / "lockdown"

    def customize(app: FastAPI) -> None:
        app.state.shadow_file = shadow
        app.state.lockdown_file = lockdown

    with LiveServer(settings, customize) as lv:
        yield WebLive(lv, shadow, lockdown)
