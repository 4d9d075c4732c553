"""The API on libvirt's test:///default driver: auth on every route, VMs, storage, errors, metrics."""

from __future__ import annotations

import os
import stat
from typing import Any

import libvirt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.node.conftest import Api
from tests.node.test_vmspec import json_values, spec_like


def _fill(path: str) -> str:
    return path.replace("{name}", "nothing-here").replace("{snapshot}", "nothing-here")


def _all_routes(routes: Any) -> list[tuple[str, str]]:
    """Every (method, path) of the app, walking included routers (FastAPI nests them lazily)."""
    out = []
    for r in routes:
        if hasattr(r, "original_router"):
            out += _all_routes(r.original_router.routes)
        elif hasattr(r, "routes"):
            out += _all_routes(r.routes)
        else:
            out += [(m, r.path) for m in (getattr(r, "methods", None) or ()) if m != "HEAD"]
    return out


def test_every_route_but_health_needs_the_token(api: Api) -> None:
    routes = _all_routes(api.app.routes)
    documented = {(m.upper(), p) for p, ops in api.app.openapi()["paths"].items() for m in ops}
    assert documented <= set(routes)
    assert len(routes) > 20  # the enumeration really sees the app
    for method, path in routes:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": api.hdr["Authorization"][7:]}):
            r = api.request(method, _fill(path), headers=headers)
            if path == "/health":
                assert r.status_code == 200, (method, path)
            else:
                assert r.status_code == 401, (method, path, headers)
                assert r.json()["field"] == "Authorization"
    assert api.get("/openapi.json", headers=api.hdr).json()["info"]["title"] == "Quantix OS node API"


def test_token_file_is_private_and_stable(api: Api, settings: Any) -> None:
    st_ = os.stat(settings.token_path)
    assert stat.S_IMODE(st_.st_mode) == 0o600
    from qx_node.auth import ensure_token

    assert ensure_token(settings.token_path) == api.node.token


def test_health_reports_components(api: Api) -> None:
    body = api.get("/health").json()
    assert body["status"] == "ok" and body["version"]
    assert {k: v["ok"] for k, v in body["components"].items()} == {"libvirt": True, "data": True, "console": True}


def test_vm_lifecycle(api: Api, settings: Any) -> None:
    h = api.hdr
    r = api.post("/v1/vms?wait=true", headers=h, json={"name": "web", "memory_mib": 64, "vcpus": 2,
                                             "disks": [{"size_gib": 1}], "nics": [{"bridge": "br0"}],
                                             "autostart": True})
    assert r.status_code == 201, r.text
    vm = r.json()
    assert vm["state"] == "running" and vm["autostart"] and vm["disks"] == [str(settings.pool_dir / "web-disk0.qcow2")]
    assert "web" in [v["name"] for v in api.get("/v1/vms", headers=h).json()]
    assert api.post("/v1/vms?wait=true", headers=h, json={"name": "web", "memory_mib": 64}).status_code == 409
    assert api.post("/v1/vms/web/start", headers=h).status_code == 409
    s1 = api.get("/v1/vms/web/stats", headers=h).json()
    s2 = api.get("/v1/vms/web/stats", headers=h).json()
    assert s1["cpu_percent"] is None and isinstance(s2["cpu_percent"], float)
    assert api.delete("/v1/vms/web", headers=h).status_code == 409  # running
    assert api.post("/v1/vms/web/stop", headers=h).json()["state"] == "shutoff"
    for action in ("stop", "shutdown", "reboot"):
        r = api.post(f"/v1/vms/web/{action}", headers=h)
        assert r.status_code == 409 and "not running" in r.json()["error"]
    assert api.get("/v1/vms/web/console", headers=h).status_code == 409
    # Delete keeps the disk by default; the volume is then free to delete.
    assert api.delete("/v1/vms/web", headers=h).json()["removed_volumes"] == []
    assert api.get("/v1/vms/web", headers=h).status_code == 404
    assert api.get("/v1/storage/volumes/web-disk0.qcow2", headers=h).status_code == 200
    assert api.delete("/v1/storage/volumes/web-disk0.qcow2", headers=h).status_code == 200


def test_delete_with_disks_and_volume_in_use(api: Api) -> None:
    h = api.hdr
    assert api.post("/v1/storage/volumes", headers=h, json={"name": "data.qcow2", "size_gib": 2}).status_code == 201
    r = api.post("/v1/vms?wait=true", headers=h, json={"name": "db", "memory_mib": 64, "start": False,
                                             "disks": [{"size_gib": 1}, {"volume": "data.qcow2"}]})
    assert r.status_code == 201 and r.json()["state"] == "shutoff"
    r = api.delete("/v1/storage/volumes/data.qcow2", headers=h)
    assert r.status_code == 409 and "db" in r.json()["error"]
    r = api.delete("/v1/vms/db?remove_disks=true", headers=h)
    assert sorted(r.json()["removed_volumes"]) == ["data.qcow2", "db-disk0.qcow2"]
    assert api.get("/v1/storage/volumes", headers=h).json() == []


def test_errors_name_the_field(api: Api) -> None:
    h = api.hdr
    r = api.post("/v1/vms?wait=true", headers=h, json={"name": "x", "memory_mib": 64, "disks": [{"volume": "missing.qcow2"}]})
    assert r.status_code == 404 and r.json()["field"] == "disks[0].volume"
    r = api.post("/v1/vms?wait=true", headers=h, content=b"{not json")
    assert r.status_code == 422 and r.json()["field"] == "body"
    r = api.get("/v1/vms/..%2Fetc", headers=h)
    assert r.status_code in (404, 422)
    r = api.get("/v1/vms/a<b", headers=h)
    assert r.status_code == 422 and r.json()["field"] == "name"
    r = api.post("/v1/storage/volumes", headers=h, json={"name": "../../etc/passwd", "size_gib": 1})
    assert r.status_code == 422 and r.json()["field"] == "name"
    r = api.put("/v1/storage/isos/notaniso.img", headers=h, content=b"x")
    assert r.status_code == 422 and r.json()["field"] == "name"
    # A failed create leaves nothing behind (the new disk is removed again).
    r = api.post("/v1/vms?wait=true", headers=h, json={"name": "half", "memory_mib": 64, "disks": [{"size_gib": 1}],
                                             "cdrom": "nope.iso"})
    assert r.status_code == 404 and r.json()["field"] == "cdrom"
    assert api.get("/v1/storage/volumes", headers=h).json() == []


def test_iso_upload_is_atomic(api: Api, settings: Any) -> None:
    h = api.hdr
    data = os.urandom(300_000)
    r = api.put("/v1/storage/isos/disc.iso", headers=h, content=data)
    assert r.status_code == 201, r.text
    assert (settings.pool_dir / "disc.iso").read_bytes() == data
    assert api.put("/v1/storage/isos/disc.iso", headers=h, content=b"x").status_code == 409
    assert [p.name for p in settings.pool_dir.iterdir()] == ["disc.iso"]  # no temp files


def test_host_hardware_metrics(api: Api) -> None:
    h = api.hdr
    host = api.get("/v1/host", headers=h).json()
    assert host["libvirt"] and host["cpu_threads"] >= 1 and host["memory_bytes"] > 0
    stats = api.get("/v1/host/stats", headers=h).json()
    assert 0 <= stats["cpu_percent"] <= 100 and stats["window_s"] >= 0.2
    hw = api.get("/v1/hardware", headers=h).json()
    assert "lo" in [n["name"] for n in hw["nics"]] and isinstance(hw["pci"], list)
    text = api.get("/metrics", headers=h).text
    assert 'qx_vm_state{vm="test"} 1.0' in text  # the test driver's built-in running VM
    assert "qx_node_libvirt_up 1.0" in text and "qx_host_memory_total_bytes" in text


def test_restarting_the_daemon_keeps_vms_running(settings: Any) -> None:
    from qx_node.api import create_app
    from qx_node.node import Node

    # Hold the in-process test driver (its state lives while a connection is open), as libvirtd would.
    keeper = libvirt.open("test:///default")
    try:
        for round_ in range(2):
            node = Node(settings)
            with Api(create_app(node)) as c:
                h = {"Authorization": f"Bearer {node.token}"}
                if round_ == 0:
                    assert c.post("/v1/vms?wait=true", headers=h, json={"name": "keep", "memory_mib": 64}).status_code == 201
                else:
                    assert c.get("/v1/vms/keep", headers=h).json()["state"] == "running"
        assert keeper.lookupByName("keep").isActive()
    finally:
        keeper.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=json_values | spec_like)
def test_fuzzed_bodies_never_500(api: Api, body: Any) -> None:
    r = api.post("/v1/vms?wait=true", headers=api.hdr, json=body)
    if r.status_code == 201:
        api.delete(f"/v1/vms/{body['name']}?remove_disks=true&force=true", headers=api.hdr)
        return
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["field"], r.text


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=json_values | st.fixed_dictionaries({"name": st.text(max_size=20)},
                                                optional={"size_gib": json_values, "format": json_values}))
def test_fuzzed_volume_bodies_never_500(api: Api, body: Any) -> None:
    r = api.post("/v1/storage/volumes", headers=api.hdr, json=body)
    if r.status_code == 201:
        api.delete(f"/v1/storage/volumes/{body['name']}", headers=api.hdr)
        return
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["field"], r.text


def test_unreachable_libvirtd_is_503_not_500(tmp_path: Any) -> None:
    from qx_node.api import create_app
    from qx_node.node import Node
    from tests.node.conftest import make_settings

    s = make_settings(tmp_path, "qemu+unix:///system?socket=/nonexistent/libvirt-sock")
    node = Node(s, connect_wait=0.5)
    with Api(create_app(node), raise_server_exceptions=False) as c:
        h = {"Authorization": f"Bearer {node.token}"}
        body = c.get("/health").json()
        assert c.get("/health").status_code == 503 and body["status"] == "degraded"
        assert not body["components"]["libvirt"]["ok"] and "/nonexistent" in body["components"]["libvirt"]["detail"]
        for method, path in (("GET", "/v1/vms"), ("GET", "/v1/vms/x"), ("POST", "/v1/vms/x/start"),
                             ("GET", "/v1/storage/volumes")):
            r = c.request(method, path, headers=h)
            assert r.status_code == 503 and "libvirtd" in r.json()["error"], (path, r.text)
        assert "qx_node_libvirt_up 0.0" in c.get("/metrics", headers=h).text
        assert c.get("/v1/host", headers=h).json()["libvirt"] is None
