"""Every error the server sends has one shape, ``{"error": str, "field": str|null, "hint": str|null}``.

Parametrized over the route table (:data:`qx_update_server.app.ROUTERS`, which ``create_app`` is proven
to consist of) plus the static mounts, against a real server on 127.0.0.1: for each route, the errors
the guards produce (no token 401, a token without the scope 403, a chunked body 411, a body over the
limit 413), a wrong method (405), and route-specific bad input (FastAPI's validation 422, unknown
releases and uploads 404, refused values 400). A route missing from :data:`BAD_INPUT` fails the test,
so a new route cannot escape it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from starlette.routing import Mount

from qx_update_server.api.guards import MAX_JSON_BODY, is_public, route_scope
from qx_update_server.app import ROUTERS, create_app

from .conftest import ALL, Server, app_routes, start_server

ROUTES = sorted((m, r.path) for router in ROUTERS for r in router.routes for m in r.methods)
UNKNOWN = "0" * 32  # an upload id of the right form that does not exist

# (method, path) -> requests made with a token holding every scope, each with the status it must get.
# An empty list says the route has no bad input a client could send once authenticated.
BAD_INPUT: dict[tuple[str, str], list[tuple[dict[str, Any], int]]] = {
    ("GET", "/healthz"): [],
    ("GET", "/admin"): [],
    ("GET", "/v1/releases"): [],
    ("POST", "/v1/uploads"): [],
    ("PUT", "/v1/uploads/{upload_id}/{filename}"): [
        ({"path": f"/v1/uploads/{UNKNOWN}/SHA256SUMS", "data": b"x"}, 404),
        ({"path": "/v1/uploads/not-an-id/SHA256SUMS", "data": b"x"}, 404)],
    ("POST", "/v1/uploads/{upload_id}/publish"): [
        ({"path": f"/v1/uploads/{UNKNOWN}/publish", "json": {"channel": "dev"}}, 404),
        ({"path": f"/v1/uploads/{UNKNOWN}/publish", "json": {"channel": 5}}, 422)],
    ("POST", "/v1/releases/{version}/promote"): [
        ({"path": "/v1/releases/9.9.9/promote", "json": {"to": "beta"}}, 404),
        ({"path": "/v1/releases/9.9.9/promote", "json": {}}, 422)],
    ("POST", "/v1/releases/{version}/yank"): [({"path": "/v1/releases/9.9.9/yank"}, 404)],
    ("POST", "/v1/releases/{version}/remove"): [({"path": "/v1/releases/9.9.9/remove"}, 404)],
    ("POST", "/v1/releases/{version}/rollout"): [
        ({"path": "/v1/releases/9.9.9/rollout", "json": {"percent": 10}}, 404),
        ({"path": "/v1/releases/9.9.9/rollout", "json": {"percent": 500}}, 422),
        ({"path": "/v1/releases/9.9.9/rollout", "data": b"{not json", "headers": {"Content-Type": "application/json"}},
         422)],
    ("POST", "/v1/keys/init"): [({"json": {}}, 400), ({"json": {"root_keys": "many"}}, 422)],  # keys exist already
    ("POST", "/v1/keys/rotate"): [],
    ("GET", "/v1/keys/status"): [],
    ("POST", "/v1/keys/root"): [({"json": {}}, 422), ({"json": {"root": {"signed": {}}}}, 400)],
    ("POST", "/v1/checkin"): [
        ({"json": {}}, 422),
        ({"json": {"host_id": "h", "version": "1.0.0", "slot": "a", "channel": "dev", "health": "good"},
          "headers": {"X-Quantix-Host-Key": "short"}}, 400)],
    ("GET", "/v1/fleet"): [({"params": {"limit": 0}}, 400), ({"params": {"limit": "x"}}, 422)],
    ("GET", "/v1/audit"): [({"params": {"limit": "x"}}, 422)],
    ("GET", "/v1/tokens"): [],
    ("POST", "/v1/tokens"): [
        ({"json": {}}, 422),
        ({"json": {"name": "x", "scopes": []}}, 422),
        ({"json": {"name": "x", "scopes": "read"}}, 422),
        ({"json": {"name": "x", "scopes": ["read"], "expires_days": 0}}, 422),
        ({"json": {"name": "x", "scopes": ["read"], "expires_days": "soon"}}, 422),
        ({"json": {"name": "tok_x", "scopes": ["read"]}}, 400),
        ({"json": {"name": "a b", "scopes": ["read"]}}, 400),
        ({"json": {"name": "x", "scopes": ["root"]}}, 400),
        ({"json": {"name": "x", "scopes": ["read"], "host_id": "h1"}}, 400),  # --host: checkin only
        ({"json": {"name": "x", "scopes": ["checkin"], "host_id": "../h"}}, 422),
        ({"data": b'{"name": "\xff", "scopes": ["read"]}', "headers": {"Content-Type": "application/json"}}, 400),
        ({"data": b"[" * 20000, "headers": {"Content-Type": "application/json"}}, 400),
        ({"data": b"[" * 20000 + b"]" * 20000, "headers": {"Content-Type": "application/json"}}, 400)],
    ("POST", "/v1/tokens/{token_id}/revoke"): [
        ({"path": "/v1/tokens/tok_000000000000/revoke"}, 404),
        ({"path": "/v1/tokens/ci/revoke"}, 404),
        ({"path": "/v1/tokens/" + "x" * 300 + "/revoke"}, 404)],
}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str, str]]:
    """One server for the module, with keys, a token with every scope and one with none that matters."""
    s = start_server(tmp_path_factory.mktemp("errors") / "data")
    full = s.token(*ALL, "tokens")
    r = requests.post(s.url + "/v1/keys/init", json={}, headers={"Authorization": f"Bearer {full}"}, timeout=30)
    assert r.ok, r.text
    yield s, full, s.token("checkin")
    s.stop()


def assert_shape(r: requests.Response, status: int) -> None:
    assert r.status_code == status, (r.request.method, r.request.url, r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error", "field", "hint"}, body
    assert isinstance(body["error"], str) and body["error"]
    assert body["field"] is None or isinstance(body["field"], str)
    assert body["hint"] is None or isinstance(body["hint"], str)


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def test_route_table_is_the_app(tmp_path: Path) -> None:
    """The parametrization below covers the whole app: its routes are exactly the routers' plus mounts."""
    app = create_app(tmp_path / "enum")
    assert app_routes(app) == sorted(r for r in ROUTES if r[0] != "HEAD")
    assert sorted(r.path for r in app.routes if isinstance(r, Mount)) == ["/admin/static", "/targets"]
    missing = {r for r in ROUTES if r[0] != "HEAD"} - set(BAD_INPUT)
    assert not missing, f"routes without an entry in BAD_INPUT: {missing}"


@pytest.mark.parametrize("method,path", [r for r in ROUTES if r[0] != "HEAD"])  # HEAD: no body to shape
def test_every_error_of_every_route_has_one_shape(srv: tuple[Server, str, str], method: str, path: str) -> None:
    server, full, other = srv
    url = server.url + _concrete(path)
    if not is_public(path):
        assert_shape(requests.request(method, url, timeout=10), 401)
        assert_shape(requests.request(method, url, headers={"Authorization": "Bearer nope"}, timeout=10), 401)
        needed = route_scope(method, _concrete(path))
        assert needed is not None
        if needed != "checkin":
            assert_shape(requests.request(method, url, headers={"Authorization": f"Bearer {other}"}, timeout=10), 403)
        auth = {"Authorization": f"Bearer {full}"}
        if method != "PUT":  # uploads stream with their own limit (tested in test_server)
            assert_shape(requests.request(method, url, headers=auth | {"Content-Length": str(MAX_JSON_BODY + 1)},
                                          data=b"x" * (MAX_JSON_BODY + 1), timeout=10), 413)
            assert_shape(requests.request(method, url, headers=auth, data=iter([b"{}"]), timeout=10), 411)
    else:
        auth = {}
    wrong = "DELETE" if method != "DELETE" else "PATCH"
    assert_shape(requests.request(wrong, url, headers=auth, timeout=10), 405)
    for kwargs, status in BAD_INPUT[(method, path)]:
        kw = dict(kwargs)
        target = server.url + kw.pop("path", _concrete(path))
        headers = auth | kw.pop("headers", {})
        assert_shape(requests.request(method, target, headers=headers, timeout=10, **kw), status)


@pytest.mark.parametrize("path", ["/metadata/none.json", "/metadata/../keys", "/targets/9.9.9/x.efi",
                                  "/admin/static/none.js", "/nowhere", "/v1/nowhere"])
def test_unknown_paths_have_the_shape(srv: tuple[Server, str, str], path: str) -> None:
    server, full, _ = srv
    assert_shape(requests.get(server.url + path, headers={"Authorization": f"Bearer {full}"}, timeout=10), 404)


def test_public_listener_refusal_has_the_shape(tmp_path: Path) -> None:
    from .conftest import free_port

    admin_port = free_port()
    s = start_server(tmp_path / "data", extra_args=["--admin-listen", f"127.0.0.1:{admin_port}"])
    try:
        assert_shape(requests.get(s.url + "/v1/releases", timeout=10), 404)
        assert_shape(requests.get(s.url + "/admin", timeout=10), 404)
    finally:
        s.stop()
