"""The real service (uvicorn subprocess on 127.0.0.1) driven through qx-release and plain HTTP.

After every change python-tuf's ngclient verifies the repository through the server's public URLs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests

from qx_update_server.app import create_app, is_public

from .conftest import ROOT, Server, start_server, verify_repo


def qx_release(server: Server, token: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "QX_RELEASE_TOKEN": token}
    p = subprocess.run([sys.executable, "-m", "qx_update_server.release_cli", "--server", server.url, *args],
                       capture_output=True, text=True, env=env, cwd=ROOT)
    if check and p.returncode != 0:
        raise AssertionError(f"qx-release {args} failed ({p.returncode}): {p.stderr}")
    return p


ALL = ("publish", "promote", "yank", "rollout", "keys", "read", "checkin")


def test_every_protected_route_needs_a_token(server, tmp_path):
    app = create_app(tmp_path / "enum")
    checked = 0
    for route in app.routes:
        methods = getattr(route, "methods", None) or {"GET"}
        path = re.sub(r"\{[^}]+\}", "x", route.path)
        if is_public(route.path) or is_public(path + "/"):
            continue
        for method in methods:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}):
                r = requests.request(method, server.url + path, headers=headers, timeout=5)
                assert r.status_code == 401, (method, path, headers, r.status_code)
            checked += 1
    assert checked >= 12
    # the public part really is public
    assert requests.get(server.url + "/healthz", timeout=5).ok
    assert requests.get(server.url + "/admin", timeout=5).ok
    # a token without the scope gets 403
    read = server.token("read")
    r = requests.post(server.url + "/v1/keys/init", json={}, headers={"Authorization": f"Bearer {read}"}, timeout=5)
    assert r.status_code == 403


def test_upload_names_and_size_limit(tmp_path):
    s = start_server(tmp_path / "data", extra_args=["--max-upload", "1000"])
    try:
        h = {"Authorization": f"Bearer {s.token('publish')}"}
        up = requests.post(s.url + "/v1/uploads", headers=h, timeout=5).json()["upload_id"]
        for bad in ("..%2F..%2Fetc%2Fpasswd", "evil.sh", ".hidden", "quantix-os_..efi"):
            r = requests.put(f"{s.url}/v1/uploads/{up}/{bad}", data=b"x", headers=h, timeout=5)
            assert r.status_code in (400, 404), (bad, r.status_code)
        r = requests.put(f"{s.url}/v1/uploads/../{up}/SHA256SUMS", data=b"x", headers=h, timeout=5)
        assert r.status_code in (400, 401, 404)
        r = requests.put(f"{s.url}/v1/uploads/{up}/SHA256SUMS", data=b"x" * 2000, headers=h, timeout=5)
        assert r.status_code == 413
        r = requests.put(f"{s.url}/v1/uploads/{'0' * 32}/SHA256SUMS", data=b"x", headers=h, timeout=5)
        assert r.status_code == 404
        assert not list((tmp_path / "data").rglob("passwd"))
    finally:
        s.stop()


def test_checkin_feeds_fleet(server):
    host = {"Authorization": f"Bearer {server.token('checkin')}"}
    read = {"Authorization": f"Bearer {server.token('read')}"}
    body = {"host_id": "node-1", "version": "0.2.0", "slot": "a", "channel": "beta", "health": "good",
            "last_error": None}
    assert requests.post(server.url + "/v1/checkin", json=body, headers=host, timeout=5).status_code == 204
    body2 = body | {"version": "0.3.0", "slot": "b", "health": "bad", "last_error": "bootcheck failed"}
    assert requests.post(server.url + "/v1/checkin", json=body2, headers=host, timeout=5).status_code == 204
    hosts = requests.get(server.url + "/v1/fleet", headers=read, timeout=5).json()["hosts"]
    assert len(hosts) == 1 and hosts[0]["version"] == "0.3.0" and hosts[0]["last_error"] == "bootcheck failed"
    for field, bad in (("slot", "c"), ("channel", "nightly"), ("host_id", "../x"), ("health", "great")):
        r = requests.post(server.url + "/v1/checkin", json=body | {field: bad}, headers=host, timeout=5)
        assert r.status_code == 422 and field in r.text
    # a checkin token cannot read the fleet
    assert requests.get(server.url + "/v1/fleet", headers=host, timeout=5).status_code == 403
