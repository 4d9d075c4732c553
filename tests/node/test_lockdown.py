"""Lockdown mode on the node API: a real qx-node (uvicorn, TLS, token) refuses host-configuration
changes with 423 and a hint while the lockdown file exists, reads them, and accepts changes again once
the file is gone — switched while it runs, as the console does."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx

from qx_common import hostpaths
from qx_node.settings import Settings
from tests.node.conftest import LiveServer


def test_config_routes_refused_while_locked_and_reads_still_work(settings: Settings, tmp_path: Path) -> None:
    flag = hostpaths.lockdown_file(tmp_path / "config")

    def point(app) -> None:  # type: ignore[no-untyped-def]
        app.state.lockdown_file = flag

    with LiveServer(settings, customize=point) as live:
        ctx = ssl.create_default_context(cafile=str(live.cert))
        with httpx.Client(base_url=live.url, verify=ctx, headers=live.auth, timeout=10) as c:
            assert c.patch("/v1/host/settings", json={"overcommit_memory": True}).status_code == 200
            flag.parent.mkdir(parents=True)
            flag.write_text("")
            r = c.patch("/v1/host/settings", json={"overcommit_memory": False})
            assert r.status_code == 423
            body = r.json()
            assert "lockdown mode" in body["error"] and "console" in body["hint"]
            assert c.post("/v1/host/maintenance", json={"enabled": True}).status_code == 423
            # nothing changed, and reading still works
            got = c.get("/v1/host/settings")
            assert got.status_code == 200 and got.json()["overcommit_memory"] is True
            assert c.get("/v1/vms").status_code == 200  # VM operations are not host configuration
            flag.unlink()
            r = c.patch("/v1/host/settings", json={"overcommit_memory": False})
            assert r.status_code == 200 and r.json()["overcommit_memory"] is False
