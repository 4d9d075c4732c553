"""The node API ↔ qx-update boundary with the real qx-update: a live qx-node (uvicorn, TLS, token) runs the real
CLI (``python -m qx_update --config … --json …``, a subprocess) against a host made of files — an ESP directory,
two slot images, a state directory (tests/updates/conftest.py's ``make_host``, through the ``update_host``
fixture of tests/node/conftest.py) — and a real signed TUF repository served on 127.0.0.1. Every state the
routes answer (not checked, available, installed awaiting a reboot, cancelled, refused, check failed) is
produced by qx-update itself; nothing here writes qx-update's JSON.
The apply's progress is read where a client reads it: the task events of ``/v1/events``.
"""

from __future__ import annotations

import json
import queue
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from qx_common import hostpaths
from qx_node.errors import Conflict, Unavailable
from qx_node.updates import UpdateService
from qx_node.settings import Settings
from tests.node.conftest import Live, LiveServer, UpdateHost, qx_update_cmd, wait_for
from tests.updates.conftest import Host, payload
from tests.updates.tufrepo import TufRepo

ALL = ["dev", "beta", "stable"]


@dataclass
class UpdNode:
    live: Live
    host: Host
    repo: TufRepo
    c: httpx.Client
    lockdown: Path


@pytest.fixture
def upd(settings: Settings, update_host: UpdateHost, tmp_path: Path) -> Iterator[UpdNode]:
    lockdown = hostpaths.lockdown_file(tmp_path / "config")

    def point(app) -> None:  # type: ignore[no-untyped-def]
        app.state.lockdown_file = lockdown

    with LiveServer(settings, customize=point) as live:
        live.node.tasks.interval = 0.0  # every percent of qx-update's progress on the stream (the apply is quick)
        ctx = ssl.create_default_context(cafile=str(live.cert))
        with httpx.Client(base_url=live.url, verify=ctx, headers=live.auth, timeout=120) as c:
            yield UpdNode(live, update_host.host, update_host.repo, c, lockdown)


def _events(live: Live, stop: threading.Event) -> queue.Queue[dict[str, Any]]:
    got: queue.Queue[dict[str, Any]] = queue.Queue()

    def reader() -> None:
        try:
            with httpx.Client(verify=str(live.cert), timeout=120) as c, \
                    c.stream("GET", f"{live.url}/v1/events", headers=live.auth) as r:
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        got.put(json.loads(line[6:]))
                    if stop.is_set():
                        return
        except httpx.RemoteProtocolError:
            if not stop.is_set():  # the server ending the stream at the test's end is not a failure
                raise

    threading.Thread(target=reader, daemon=True).start()
    assert got.get(timeout=10)["type"] == "snapshot"
    return got


def test_status_check_apply_with_progress_and_cancel(upd: UpdNode) -> None:
    c = upd.c
    r = c.get("/v1/host/updates")
    assert r.status_code == 200, r.text
    st = r.json()
    assert (st["state"], st["channel"], st["running_slot"], st["running_version"]) == (
        "not-checked", "stable", "a", "1.0.0")
    assert (st["available"], st["awaiting_reboot"], st["applying"], st["rollback"]) == (None, None, False, None)

    upd.repo.add_release("1.1.0", slot_bytes=payload(21), channels=ALL)
    r = c.post("/v1/host/updates/check")
    assert r.status_code == 200, r.text
    assert r.json()["available"]["version"] == "1.1.0" and r.json()["installed"] is False
    st = c.get("/v1/host/updates").json()
    assert (st["state"], st["available"]) == ("update-available", "1.1.0")

    stop = threading.Event()
    events = _events(upd.live, stop)
    r = c.post("/v1/host/updates/apply")
    assert r.status_code == 202, r.text
    task = r.json()
    assert task["kind"] == "update" and r.headers["location"] == task["url"]
    seen: list[dict[str, Any]] = []
    while not (seen and seen[-1]["id"] == task["id"] and seen[-1]["state"] != "running"):
        ev = events.get(timeout=120)
        if ev["type"] == "task" and ev["task"]["id"] == task["id"]:
            seen.append(ev["task"])
    stop.set()
    done = seen[-1]
    assert done["state"] == "succeeded", done
    # qx-update's ProgressEvent lines, phase after phase, as one number that only grows.
    progress = [t["progress"] for t in seen if t["state"] == "running"]
    assert len(progress) > 3 and any(0 < p < 100 for p in progress) and progress == sorted(progress), progress
    messages = [t["message"] for t in seen if t["state"] == "running"]
    assert any(m.startswith("step ") and "writing slot" in m and m.endswith(" %") for m in messages), messages
    assert done["result"]["applied"]["version"] == "1.1.0" and done["result"]["slot"] == "b"
    assert c.get(task["url"]).json()["state"] == "succeeded"

    st = c.get("/v1/host/updates").json()
    assert (st["state"], st["awaiting_reboot"], st["available"], st["applying"]) == (
        "reboot-pending", "1.1.0", None, False)
    assert st["slots"]["b"]["version"] == "1.1.0" and st["slots"]["b"]["next_boot"] is True

    r = c.post("/v1/host/updates/rollback")
    assert r.status_code == 200, r.text
    assert (r.json()["rolled_back"], r.json()["cancelled"]) == (False, "1.1.0")
    st = c.get("/v1/host/updates").json()
    assert st["awaiting_reboot"] is None and st["slots"]["b"]["bad"] is True


def test_channel_refusals_and_lockdown(upd: UpdNode) -> None:
    c = upd.c
    r = c.put("/v1/host/updates/channel", json={"channel": "beta"})
    assert r.status_code == 200, r.text
    assert r.json()["channel"] == "beta" and r.json()["file"]
    assert c.get("/v1/host/updates").json()["channel"] == "beta"          # qx-update reads it back
    r = c.put("/v1/host/updates/channel", json={"channel": "nightly"})
    assert r.status_code == 422 and r.json()["field"] == "channel"
    r = c.put("/v1/host/updates/channel", json={"channel": "beta", "x": 1})
    assert r.status_code == 422 and r.json()["field"] == "x"

    # qx-update's own refusal, its message and hint kept: nothing to roll back to.
    r = c.post("/v1/host/updates/rollback")
    assert r.status_code == 409, r.text
    error = r.json()["error"]
    assert error.startswith("qx-update rollback") and "slot B holds no bootable release" in error
    # The update server unreachable: a 502 with qx-update's message; status records the failed check.
    upd.host.write_config(server_url="http://127.0.0.1:9/")
    r = c.post("/v1/host/updates/check")
    assert r.status_code == 502 and "cannot fetch update metadata" in r.json()["error"], r.text
    assert c.get("/v1/host/updates").json()["state"] == "check-failed"
    # An apply that fails is a failed task carrying the same error.
    r = c.post("/v1/host/updates/apply")
    assert r.status_code == 202
    t = wait_for(lambda: (x := c.get(r.json()["url"]).json())["state"] != "running" and x, 120, "the apply task")
    assert t["state"] == "failed" and t["error"]["status"] == 502 and "qx-update apply" in t["error"]["error"]

    # Lockdown: every change refused (423), the state still readable.
    upd.lockdown.parent.mkdir(parents=True)
    upd.lockdown.write_text("")
    for method, path, body in (("PUT", "/v1/host/updates/channel", {"channel": "stable"}),
                               ("POST", "/v1/host/updates/check", None), ("POST", "/v1/host/updates/apply", None),
                               ("POST", "/v1/host/updates/rollback", None)):
        r = c.request(method, path, json=body)
        assert r.status_code == 423 and "lockdown" in r.json()["error"], (path, r.text)
    assert c.get("/v1/host/updates").json()["channel"] == "beta"


def test_no_token_no_qx_update_one_apply(upd: UpdNode) -> None:
    for method, path in (("GET", ""), ("POST", "/check"), ("POST", "/apply"), ("POST", "/rollback"),
                         ("PUT", "/channel")):
        r = httpx.request(method, f"{upd.live.url}/v1/host/updates{path}", verify=str(upd.live.cert), json={})
        assert r.status_code == 401, path
    with pytest.raises(Unavailable, match="qx-update status: .*not found"):
        UpdateService(["qx-update-not-installed-here"]).status()
    svc = UpdateService(qx_update_cmd(upd.host.config))
    svc.begin_apply()
    with pytest.raises(Conflict, match="being applied already"):
        svc.begin_apply()
    for what, call in (("rollback", svc.rollback), ("check", svc.check), ("channel", lambda: svc.set_channel("dev"))):
        with pytest.raises(Conflict, match=f"{what}: an update is being applied"):
            call()
    assert svc.status()["applying"] is True
    svc.abandon_apply()
    assert svc.status()["applying"] is False
