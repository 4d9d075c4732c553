"""The node API as a hostile client sees it, against the real server (uvicorn, TLS, test:///default).

One test (or a few) per defect class of issue 14; each enumerates every place of its class it can
find from the app itself (the routes, the OpenAPI document), so a route added later is covered:

* bodies that used to break the server: deep nesting, lone surrogates, oversized JSON (refused
  before a byte of the body is read), and the keep-alive connection surviving a 500;
* integrity: names with a trailing newline, unknown query parameters, volumes attached twice or
  to two VMs without declared sharing, kernel/initrd/cdrom volumes deleted under a VM, a delete
  "with disks" that is refused only half-way;
* WebSocket routes behind the token.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import libvirt
import pytest
from fastapi import FastAPI, WebSocket

from tests.node.conftest import Live, LiveServer, RawClient

FILL = {"name": "nothing-here", "snapshot": "nothing-here", "id": "0" * 32, "dev": "vdz", "mac": "52:54:00:00:00:99"}


def _ssl(live: Live) -> Any:
    import ssl

    return ssl.create_default_context(cafile=str(live.cert))


@pytest.fixture
def client(live: Live) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, verify=_ssl(live), headers=live.auth, timeout=30) as c:
        yield c


def _doc(live: Live) -> dict[str, Any]:
    r = httpx.get(f"{live.url}/openapi.json", headers=live.auth, verify=_ssl(live))
    r.raise_for_status()
    return r.json()  # type: ignore[no-any-return]


def _operations(live: Live) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m.upper(), p, op) for p, ops in _doc(live)["paths"].items() for m, op in ops.items()]


def _json_routes(live: Live) -> list[tuple[str, str]]:
    """Every operation whose body is JSON, with its path parameters filled in."""
    return [(m, p.format(**FILL)) for m, p, op in _operations(live)
            if "application/json" in op.get("requestBody", {}).get("content", {})]


def _is_error(r: Any) -> dict[str, Any]:
    body = r.json()
    assert set(body) == {"error", "field", "hint"}, body
    return body  # type: ignore[no-any-return]


# -- bodies ---------------------------------------------------------------------------------------
def test_there_are_json_routes_to_test(live: Live) -> None:
    routes = _json_routes(live)
    assert {("POST", "/v1/vms"), ("POST", "/v1/storage/volumes"), ("PATCH", "/v1/vms/nothing-here"),
            ("POST", "/v1/vms/nothing-here/snapshots")} <= set(routes), routes


@pytest.mark.parametrize("body", [b"[" * 200_000 + b"]" * 200_000, b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
                                  b'{"name": "x", "memory_mib": 64, "disks": ' + b"[" * 40 + b"]" * 40 + b"}"],
                         ids=["lists-200k", "objects-100k", "inside-a-field-40"])
def test_deep_nesting_is_a_422_on_every_json_route(live: Live, body: bytes) -> None:
    with RawClient(live) as c:
        for method, path in _json_routes(live):
            r = c.request(method, path, body)
            assert r.status == 422, (method, path, r.body[:200])
            assert r.json()["field"] == "body" and "nested" in r.json()["error"], r.body
            assert c.reusable, (method, path)  # and the connection is still good
        assert c.request("GET", "/v1/host").status == 200


SURROGATE_BODIES = [
    b'{"name": "\\ud800", "memory_mib": 64}',  # a value echoed in the error
    b'{"\\udc00": 1}',  # a key echoed as the field
    b'{"name": "ok", "memory_mib": 64, "cmdline": "a\\udfffb", "kernel": "k"}',  # would reach libvirt
    b'{"name": "ok", "description": "\\ud83d"}',  # half of an emoji
    b'{"name": "ok", "tags": ["\\ud800"]}',
    b'["\\ud800"]',
]


def test_lone_surrogates_are_refused_and_never_echoed_raw(live: Live) -> None:
    with RawClient(live) as c:
        for method, path in _json_routes(live):
            for body in SURROGATE_BODIES:
                r = c.request(method, path, body)
                assert r.status == 422, (method, path, body, r.body[:300])
                err = r.json()  # strict UTF-8: the answer is valid Unicode
                assert err["field"] == "body" and "surrogate" in err["error"], err
        # A properly paired surrogate (an emoji) is fine Unicode; the name rule then refuses it.
        r = c.request("POST", "/v1/vms", b'{"name": "\\ud83d\\ude00", "memory_mib": 64}')
        assert r.status == 422 and r.json()["field"] == "name" and "\U0001F600" in r.json()["error"]
        # Bytes that are not UTF-8 at all, in the body, the path and the query: a 4xx in valid JSON.
        r = c.request("POST", "/v1/vms", b'{"name": "\xed\xa0\x80", "memory_mib": 64}')
        assert r.status == 422 and r.json()["field"] == "body"
        for target in (b"/v1/vms/%ED%A0%80", b"/v1/vms?%ED%A0%80=1", b"/v1/storage/volumes/%FF%FE"):
            r = c.request("GET", target)
            assert 400 <= r.status < 500, (target, r.body)
            _is_error(r)


def test_oversized_bodies_are_refused_before_they_are_read(live: Live) -> None:
    """Every route but the ISO upload: a 300 MB Content-Length is answered 413 at once — the test
    sends the headers only and would wait for ever if the server waited for the body."""
    for method, path, _op in _operations(live):
        if method == "PUT" and path.startswith("/v1/storage/isos/"):
            continue
        with RawClient(live, timeout=5) as c:
            c.start(method, path.format(**FILL), {"content-length": str(300 * 1024 * 1024),
                                                  "content-type": "application/json"})
            r = c.response()
            assert r.status == 413, (method, path, r.body[:200])
            assert _is_error(r)["field"] == "body"
            assert r.headers.get("connection") == "close"  # the unread body is not waited for


def test_oversized_chunked_bodies_stop_at_the_limit(live: Live) -> None:
    with RawClient(live) as c:
        c.start("POST", "/v1/vms", {"transfer-encoding": "chunked", "content-type": "application/json"})
        c.data(b'{"name": "' + b"x" * (2 * 1024 * 1024))  # 2 MiB, never finished
        r = c.response()
    assert r.status == 413 and _is_error(r)["field"] == "body", r.body


def test_the_upload_route_is_not_held_to_the_json_limit(client: httpx.Client, live: Live) -> None:
    data = b"\x00" * (3 * 1024 * 1024)
    r = client.put("/v1/storage/isos/big.iso", content=data)
    assert r.status_code == 201, r.text
    assert (live.node.storage.pool_dir / "big.iso").stat().st_size == len(data)


def test_keep_alive_survives_a_500(live: Live, monkeypatch: pytest.MonkeyPatch) -> None:
    def bug() -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(live.node.vms, "list", bug)
    with RawClient(live) as c:
        r = c.request("GET", "/v1/vms")
        assert r.status == 500
        assert _is_error(r)["error"] == "internal error (RuntimeError); see the node's log"
        assert "connection" not in r.headers and c.reusable
        r = c.request("GET", "/v1/host")  # the same connection
        assert r.status == 200 and r.json()["hostname"]
        assert c.request("GET", "/v1/vms").status == 500 and c.request("GET", "/health").status == 200


# -- names, query parameters ----------------------------------------------------------------------
NEWLINE_BODIES: list[tuple[str, str, dict[str, Any], str]] = [
    ("POST", "/v1/vms", {"name": "web\n", "memory_mib": 64}, "name"),
    ("POST", "/v1/vms", {"name": "web", "memory_mib": 64, "disks": [{"volume": "a.qcow2\n"}]}, "disks[0].volume"),
    ("POST", "/v1/vms", {"name": "web", "memory_mib": 64, "cdrom": "a.iso\n"}, "cdrom"),
    ("POST", "/v1/vms", {"name": "web", "memory_mib": 64, "kernel": "vmlinuz\n"}, "kernel"),
    ("POST", "/v1/vms", {"name": "web", "memory_mib": 64, "kernel": "k", "initrd": "i\n"}, "initrd"),
    ("POST", "/v1/vms", {"name": "web", "memory_mib": 64, "nics": [{"bridge": "br0\n"}]}, "nics[0].bridge"),
    ("POST", "/v1/vms", {"name": "web", "memory_mib": 64, "nics": [{"bridge": "br0", "mac": "52:54:00:12:34:56\n"}]},
     "nics[0].mac"),
    ("POST", "/v1/storage/volumes", {"name": "data.qcow2\n", "size_gib": 1}, "name"),
    ("PATCH", "/v1/vms/test", {"name": "renamed\n"}, "name"),
    ("PATCH", "/v1/vms/test", {"tags": ["prod\n"]}, "tags[0]"),
    ("POST", "/v1/vms/test/snapshots", {"name": "snap\n"}, "name"),
]


@pytest.mark.parametrize(("method", "path", "body", "field"), NEWLINE_BODIES,
                         ids=[f"{m} {p} {f}" for m, p, _b, f in NEWLINE_BODIES])
def test_names_with_a_trailing_newline_are_refused(client: httpx.Client, method: str, path: str,
                                                   body: dict[str, Any], field: str) -> None:
    r = client.request(method, path, json=body)
    assert r.status_code == 422, r.text
    assert _is_error(r)["field"] == field, r.text


def test_path_names_with_a_trailing_newline_are_refused(client: httpx.Client, live: Live) -> None:
    """Every path parameter of every route."""
    for method, path, op in _operations(live):
        params = [p["name"] for p in op.get("parameters", []) if p["in"] == "path"]
        for bad in params:
            values = {p: ("x.iso" if "isos" in path else "test") for p in params}
            values[bad] = values[bad] + "%0A"
            r = client.request(method, path.format(**values))
            assert r.status_code == 422, (method, path, bad, r.text)
            assert _is_error(r)["field"] == bad
    assert not any(p.name.endswith("\n") for p in live.node.storage.pool_dir.iterdir())
    assert client.get("/v1/vms/test").json()["name"] == "test"


def test_unknown_query_parameters_are_refused_naming_them(client: httpx.Client, live: Live) -> None:
    for method, path, op in _operations(live):
        declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}
        target = (path.format(**{**FILL, "name": "test"}) if "isos" not in path
                  else path.format(name="x.iso"))
        r = client.request(method, target, params={"remove_disk": "true"})  # a typo of remove_disks
        assert r.status_code == 422, (method, path, r.text)
        err = _is_error(r)
        assert err["field"] == "remove_disk" and "unknown query parameter" in err["error"], err
        for name in declared:
            r = client.request(method, f"{target}?{name}=false&{name}=true")
            assert r.status_code == 422 and _is_error(r)["field"] == name, r.text
    # The mistyped delete changed nothing: the VM is still there.
    assert client.get("/v1/vms/test").status_code == 200
    r = client.post("/v1/vms?wait=true", json={"name": "keep", "memory_mib": 64, "start": False, "disks": [{"size_gib": 1}]})
    assert r.status_code == 201
    r = client.delete("/v1/vms/keep", params={"remove_disk": "true"})
    assert r.status_code == 422 and r.json()["field"] == "remove_disk"
    assert client.get("/v1/vms/keep").status_code == 200
    assert client.get("/v1/storage/volumes/keep-disk0.qcow2").status_code == 200


# -- volumes: one writer, no deleting under a VM, no half-done deletes -----------------------------
def _raw_volume(client: httpx.Client, name: str) -> None:
    r = client.post("/v1/storage/volumes", json={"name": name, "size_gib": 1, "format": "raw"})
    assert r.status_code == 201, r.text


def test_volumes_a_vm_boots_from_or_reads_cannot_be_deleted(client: httpx.Client) -> None:
    for name in ("vmlinuz.iso", "initrd.iso", "media.iso", "data.img"):
        _raw_volume(client, name)  # test:///'s pool sees only volumes made through libvirt
    r = client.post("/v1/vms?wait=true", json={"name": "kb", "memory_mib": 64, "start": False, "kernel": "vmlinuz.iso",
                                     "initrd": "initrd.iso", "cmdline": "console=ttyS0", "cdrom": "media.iso",
                                     "boot": "cdrom", "disks": [{"volume": "data.img"}]})
    assert r.status_code == 201, r.text
    for vol in ("vmlinuz.iso", "initrd.iso", "media.iso", "data.img"):
        r = client.delete(f"/v1/storage/volumes/{vol}")
        assert r.status_code == 409 and "kb" in r.json()["error"], (vol, r.text)
        assert client.get(f"/v1/storage/volumes/{vol}").status_code == 200
    assert client.delete("/v1/vms/kb").status_code == 200
    for vol in ("vmlinuz.iso", "initrd.iso", "media.iso", "data.img"):
        assert client.delete(f"/v1/storage/volumes/{vol}").status_code == 200, vol


def test_a_volume_is_attached_once_unless_sharing_is_declared(client: httpx.Client) -> None:
    _raw_volume(client, "v.img")
    _raw_volume(client, "media.iso")
    vm = {"memory_mib": 64, "start": False}
    # Twice in one VM: as two disks, or as a disk and media.
    r = client.post("/v1/vms?wait=true", json={**vm, "name": "a", "disks": [{"volume": "v.img"}, {"volume": "v.img"}]})
    assert r.status_code == 422 and r.json()["field"] == "disks[1].volume", r.text
    r = client.post("/v1/vms?wait=true", json={**vm, "name": "a", "disks": [{"volume": "v.img"}], "cdrom": "v.img"})
    assert r.status_code == 422 and r.json()["field"] == "cdrom", r.text
    # Two VMs, one disk.
    assert client.post("/v1/vms?wait=true", json={**vm, "name": "a", "disks": [{"volume": "v.img"}]}).status_code == 201
    r = client.post("/v1/vms?wait=true", json={**vm, "name": "b", "disks": [{"volume": "v.img"}]})
    assert r.status_code == 409 and r.json()["field"] == "disks[0].volume" and "VM(s) a" in r.json()["error"], r.text
    r = client.post("/v1/vms?wait=true", json={**vm, "name": "b", "disks": [{"volume": "v.img", "shared": True}]})
    assert r.status_code == 409, "a declares no sharing: b's declaration alone is not enough"
    r = client.post("/v1/vms?wait=true", json={**vm, "name": "b", "cdrom": "v.img"})
    assert r.status_code == 409 and r.json()["field"] == "cdrom", r.text
    assert client.get("/v1/vms/b").status_code == 404
    # Read-only media may be shared freely.
    for n in ("m1", "m2"):
        assert client.post("/v1/vms?wait=true", json={**vm, "name": n, "cdrom": "media.iso"}).status_code == 201
    # Declared sharing (raw volumes only).
    _raw_volume(client, "cluster.img")
    for n in ("c1", "c2"):
        r = client.post("/v1/vms?wait=true", json={**vm, "name": n, "disks": [{"volume": "cluster.img", "shared": True}]})
        assert r.status_code == 201, r.text
    r = client.post("/v1/vms?wait=true", json={**vm, "name": "c3", "disks": [{"volume": "cluster.img"}]})
    assert r.status_code == 409, "every VM must declare the sharing"
    assert client.post("/v1/storage/volumes", json={"name": "q.qcow2", "size_gib": 1}).status_code == 201
    r = client.post("/v1/vms?wait=true", json={**vm, "name": "c4", "disks": [{"volume": "q.qcow2", "shared": True}]})
    assert r.status_code == 422 and r.json()["field"] == "disks[0].shared", r.text


def test_parallel_creates_cannot_both_take_one_volume(client: httpx.Client, live: Live) -> None:
    _raw_volume(client, "one.img")
    results: list[int] = []
    barrier = threading.Barrier(6)

    def create(i: int) -> None:
        with httpx.Client(base_url=live.url, verify=_ssl(live), headers=live.auth, timeout=30) as c:
            barrier.wait()
            results.append(c.post("/v1/vms?wait=true", json={"name": f"p{i}", "memory_mib": 64, "start": False,
                                                   "disks": [{"volume": "one.img"}]}).status_code)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == [201] + [409] * 5, results


def test_delete_with_disks_checks_everything_before_deleting_anything(client: httpx.Client) -> None:
    _raw_volume(client, "shared.img")
    vm = {"memory_mib": 64, "start": False}
    r = client.post("/v1/vms?wait=true", json={**vm, "name": "a", "disks": [{"size_gib": 1}, {"volume": "shared.img", "shared": True},
                                                                  {"size_gib": 1}]})
    assert r.status_code == 201, r.text
    r = client.post("/v1/vms?wait=true", json={**vm, "name": "b", "disks": [{"volume": "shared.img", "shared": True}]})
    assert r.status_code == 201, r.text
    before = sorted(v["name"] for v in client.get("/v1/storage/volumes").json())
    r = client.delete("/v1/vms/a", params={"remove_disks": "true"})
    assert r.status_code == 409 and "b" in r.json()["error"] and "nothing was deleted" in r.json()["error"], r.text
    assert client.get("/v1/vms/a").status_code == 200
    assert sorted(v["name"] for v in client.get("/v1/storage/volumes").json()) == before
    # A running VM without force: refused first, too.
    assert client.post("/v1/vms/b/start").status_code == 200
    r = client.delete("/v1/vms/b", params={"remove_disks": "true"})
    assert r.status_code == 409 and "running" in r.json()["error"]
    assert client.get("/v1/vms/b").json()["state"] == "running"
    # Once b is gone, a's delete removes all of its disks.
    assert client.delete("/v1/vms/b", params={"force": "true"}).status_code == 200
    r = client.delete("/v1/vms/a", params={"remove_disks": "true"})
    assert r.status_code == 200 and sorted(r.json()["removed_volumes"]) == ["a-disk0.qcow2", "a-disk2.qcow2",
                                                                              "shared.img"], r.text


def test_delete_with_disks_refuses_a_disk_another_tool_attached(client: httpx.Client, live: Live) -> None:
    """A VM defined behind the API's back (virsh) that boots from our VM's disk as its kernel."""
    r = client.post("/v1/vms?wait=true", json={"name": "a", "memory_mib": 64, "start": False, "disks": [{"size_gib": 1}]})
    assert r.status_code == 201
    disk = r.json()["disks"][0]
    conn = libvirt.open("test:///default")
    try:
        conn.defineXML(f"<domain type='test'><name>other</name><memory>65536</memory><os><type>hvm</type>"
                       f"<kernel>{disk}</kernel></os></domain>")
        r = client.delete("/v1/vms/a", params={"remove_disks": "true"})
        assert r.status_code == 409 and "other" in r.json()["error"], r.text
        assert client.get("/v1/vms/a").status_code == 200
        r = client.delete("/v1/storage/volumes/a-disk0.qcow2")
        assert r.status_code == 409 and "a, other" in r.json()["error"], r.text
    finally:
        conn.lookupByName("other").undefine()
        conn.close()


def _race(live: Live, **requests: tuple[str, str, dict[str, Any]]) -> dict[str, httpx.Response]:
    """Send the requests at the same moment, each from its own client; their responses by key."""
    out: dict[str, httpx.Response] = {}
    barrier = threading.Barrier(len(requests))

    def run(key: str, method: str, path: str, kw: dict[str, Any]) -> None:
        with httpx.Client(base_url=live.url, verify=_ssl(live), headers=live.auth, timeout=30) as c:
            barrier.wait()
            out[key] = c.request(method, path, **kw)

    threads = [threading.Thread(target=run, args=(k, *v)) for k, v in requests.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def test_parallel_delete_and_attach_of_one_volume(client: httpx.Client, live: Live) -> None:
    """Deleting a volume (or a VM with its disks) while another request attaches it: never both."""
    attach = ("POST", "/v1/vms?wait=true", {"json": {"name": "new", "memory_mib": 64, "start": False,
                                           "disks": [{"volume": "v.img"}]}})
    seen = set()
    for _round in range(10):
        _raw_volume(client, "v.img")
        out = _race(live, delete=("DELETE", "/v1/storage/volumes/v.img", {}), create=attach)
        pair = (out["delete"].status_code, out["create"].status_code)
        assert pair in {(200, 404), (409, 201)}, (pair, out["delete"].text, out["create"].text)
        seen.add(pair)
        if pair == (409, 201):
            assert client.get("/v1/vms/new").json()["disks"][0].endswith("/v.img")
            assert client.get("/v1/storage/volumes/v.img").status_code == 200
            assert client.delete("/v1/vms/new", params={"remove_disks": "true"}).status_code == 200
        assert client.get("/v1/storage/volumes/v.img").status_code == 404
    for _round in range(6):
        r = client.post("/v1/vms?wait=true", json={"name": "old", "memory_mib": 64, "start": False, "disks": [{"size_gib": 1}]})
        assert r.status_code == 201, r.text
        out = _race(live, delete=("DELETE", "/v1/vms/old", {"params": {"remove_disks": "true"}}),
                    create=("POST", "/v1/vms?wait=true", {"json": {"name": "new", "memory_mib": 64, "start": False,
                                                         "disks": [{"volume": "old-disk0.qcow2"}]}}))
        pair = (out["delete"].status_code, out["create"].status_code)
        # old's disk is not shared: the attach is refused while old exists, and finds nothing after.
        assert pair in {(200, 404), (200, 409)}, (pair, out["delete"].text, out["create"].text)
        assert client.get("/v1/vms/new").status_code == 404
        assert client.get("/v1/storage/volumes/old-disk0.qcow2").status_code == 404


# -- WebSocket -----------------------------------------------------------------------------------
def _with_ws_route(app: FastAPI) -> None:
    async def echo(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text("hello " + await ws.receive_text())
        await ws.close()

    app.add_api_websocket_route("/v1/test-echo", echo)


def test_websocket_routes_need_the_token(tmp_path: Path) -> None:
    import ssl

    import websocket  # websocket-client

    from tests.node.conftest import make_settings

    with LiveServer(make_settings(tmp_path), customize=_with_ws_route) as lv:
        url = lv.url.replace("https://", "wss://") + "/v1/test-echo"
        sslopt = {"cert_reqs": ssl.CERT_REQUIRED, "ca_certs": str(lv.cert)}
        for headers in ([], ["Authorization: Bearer wrong"], [f"Authorization: {lv.token}"]):
            with pytest.raises(websocket.WebSocketBadStatusException) as e:
                websocket.create_connection(url, sslopt=sslopt, header=headers, timeout=10)
            assert e.value.status_code == 401, headers
            assert json.loads(e.value.resp_body)["field"] == "Authorization"
        # Unknown WebSocket paths are refused the same way before routing.
        with pytest.raises(websocket.WebSocketBadStatusException) as e:
            websocket.create_connection(lv.url.replace("https://", "wss://") + "/v1/vms", sslopt=sslopt, timeout=10)
        assert e.value.status_code == 401
        ws = websocket.create_connection(url, sslopt=sslopt, header=[f"Authorization: Bearer {lv.token}"], timeout=10)
        try:
            ws.send("node")
            assert ws.recv() == "hello node"
        finally:
            ws.close()
