"""Tokens over HTTP (``/v1/tokens``, scope ``tokens``) on a real server: list without secrets, create
with the secret once, no token made more powerful than its maker, revoke (immediate for the next
request, on a second server process sharing the store too), and the audit log naming both tokens."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from .conftest import ALL, Server, start_server


@pytest.fixture
def admin(server: Server) -> Iterator[tuple[Server, dict[str, str]]]:
    yield server, {"Authorization": f"Bearer {server.token(*ALL, 'tokens', name='admin')}"}


def test_create_list_revoke(admin: tuple[Server, dict[str, str]]) -> None:
    s, auth = admin
    r = requests.post(s.url + "/v1/tokens", json={"name": "ci", "scopes": ["publish", "read"], "expires_days": 30},
                      headers=auth, timeout=10)
    assert r.status_code == 201, r.text
    made = r.json()
    secret = made.pop("token")
    assert r.headers["cache-control"] == "no-store" and secret.startswith("qxr_")
    assert made["name"] == "ci" and made["scopes"] == ["publish", "read"] and made["expires"] and not made["revoked"]
    new = {"Authorization": f"Bearer {secret}"}
    assert requests.get(s.url + "/v1/releases", headers=new, timeout=10).status_code == 200

    listed = requests.get(s.url + "/v1/tokens", headers=auth, timeout=10).json()
    assert secret not in str(listed) and "hash" not in str(listed)
    row = next(t for t in listed["tokens"] if t["id"] == made["id"])
    assert set(row) == {"id", "name", "scopes", "created", "expires", "last_used", "revoked", "host_id"}
    assert row["last_used"]  # the GET above used it

    # the same name again: refused by name, while the first is active
    dup = requests.post(s.url + "/v1/tokens", json={"name": "ci", "scopes": ["read"]}, headers=auth, timeout=10)
    assert dup.status_code == 400 and dup.json()["field"] == "name"

    r = requests.post(s.url + f"/v1/tokens/{made['id']}/revoke", headers=auth, timeout=10)
    assert r.status_code == 200 and r.json()["revoked"]
    refused = requests.get(s.url + "/v1/releases", headers=new, timeout=10)
    assert refused.status_code == 401 and refused.json()["field"] == "Authorization"
    again = requests.post(s.url + f"/v1/tokens/{made['id']}/revoke", headers=auth, timeout=10)
    assert again.status_code == 400 and "already" in again.json()["error"]

    audit = requests.get(s.url + "/v1/audit", headers=auth, timeout=10).json()["entries"]
    acts = {e["action"]: e for e in audit if e["action"] in ("token-create", "token-revoke") and e["actor"] == "admin"}
    admin_id = next(t["id"] for t in listed["tokens"] if t["name"] == "admin")
    for action in ("token-create", "token-revoke"):
        assert acts[action]["token_id"] == admin_id and made["id"] in str(acts[action]["detail"]), acts[action]
        assert secret not in str(acts[action])


def test_no_token_grants_more_than_it_holds(server: Server) -> None:
    small = {"Authorization": f"Bearer {server.token('tokens', 'read')}"}
    r = requests.post(server.url + "/v1/tokens", json={"name": "up", "scopes": ["read", "keys"]},
                      headers=small, timeout=10)
    assert r.status_code == 403 and r.json()["field"] == "scopes" and "keys" in r.json()["error"]
    r = requests.post(server.url + "/v1/tokens", json={"name": "same", "scopes": ["read", "tokens"]},
                      headers=small, timeout=10)
    assert r.status_code == 201
    # without the tokens scope none of the routes answers, whatever else the token holds
    other = {"Authorization": f"Bearer {server.token(*ALL)}"}
    for method, path in (("GET", "/v1/tokens"), ("POST", "/v1/tokens"), ("POST", "/v1/tokens/tok_000000000000/revoke")):
        r = requests.request(method, server.url + path, json={"name": "x", "scopes": ["read"]}, headers=other,
                             timeout=10)
        assert r.status_code == 403 and "tokens" in r.json()["error"], (method, path)


def test_host_bound_token(admin: tuple[Server, dict[str, str]]) -> None:
    s, auth = admin
    r = requests.post(s.url + "/v1/tokens", json={"name": "h1", "scopes": ["checkin"], "host_id": "h1"},
                      headers=auth, timeout=10)
    assert r.status_code == 201 and r.json()["host_id"] == "h1"
    report = {"host_id": "h2", "version": "1.0.0", "slot": "a", "channel": "dev", "health": "good"}
    r = requests.post(s.url + "/v1/checkin", json=report, headers={"Authorization": f"Bearer {r.json()['token']}"},
                      timeout=10)
    assert r.status_code == 403 and r.json()["field"] == "host_id"


def test_revoke_races_use_on_two_servers(admin: tuple[Server, dict[str, str]], tmp_path: Path) -> None:
    """A client hammers a second server process with a token while the first revokes it: once the revoke
    has answered, no request sent after it succeeds on either process."""
    s, auth = admin
    second = start_server(s.data_dir)
    try:
        made = requests.post(s.url + "/v1/tokens", json={"name": "leaked", "scopes": ["read"]}, headers=auth,
                             timeout=10).json()
        leaked = {"Authorization": f"Bearer {made['token']}"}
        revoked = threading.Event()
        after: list[int] = []
        before: list[int] = []

        def use() -> None:
            with requests.Session() as sess:
                for _ in range(5000):  # bounded; ends once 20 requests went out after the revoke
                    was_revoked = revoked.is_set()  # read before the request is sent
                    code = sess.get(second.url + "/v1/releases", headers=leaked, timeout=10).status_code
                    (after if was_revoked else before).append(code)
                    if len(after) >= 20:
                        return

        users = [threading.Thread(target=use) for _ in range(2)]
        for t in users:
            t.start()
        while not before:  # the token is in use before it is revoked
            time.sleep(0.01)
        assert requests.post(s.url + f"/v1/tokens/{made['id']}/revoke", headers=auth, timeout=10).status_code == 200
        revoked.set()
        for t in users:
            t.join()
        assert 200 in before and after and set(after) == {401}, (before[-5:], after[:5])
        assert requests.get(s.url + "/v1/releases", headers=leaked, timeout=10).status_code == 401
    finally:
        second.stop()
