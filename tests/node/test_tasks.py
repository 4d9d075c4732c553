"""Long operations as tasks, clone, capacity admission, maintenance mode and host power — on the real
server (uvicorn, TLS) against libvirt's test:///default, with real files in the pool.

The test driver keeps no disk files of its own: where a disk's content matters (clone), the test
writes the file at the volume's path first, as a real pool would hold it.
"""

from __future__ import annotations

import json
import os
import queue
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import libvirt
import pytest

from tests.node.conftest import Live, LiveServer, MemoryPower, RawClient, make_settings, wait_for

MiB = 1024 * 1024


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    srv = LiveServer(make_settings(tmp_path))
    with srv:
        srv.node.tasks.interval = 0.0  # every 1 % of progress is an event (the default throttles to 2/s)
        yield srv


@pytest.fixture
def live(server: LiveServer) -> Live:
    return server.live


class Events:
    """The SSE stream, read on a thread into a queue."""

    def __init__(self, live: Live) -> None:
        self.q: queue.Queue[dict[str, Any]] = queue.Queue()
        self.stop = threading.Event()
        self.live = live
        threading.Thread(target=self._read, daemon=True).start()
        assert self.q.get(timeout=10)["type"] == "snapshot"

    def _read(self) -> None:
        ctx = ssl.create_default_context(cafile=str(self.live.cert))
        with httpx.Client(verify=ctx, timeout=60) as c, \
                c.stream("GET", f"{self.live.url}/v1/events", headers=self.live.auth) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    self.q.put(json.loads(line[6:]))
                if self.stop.is_set():
                    return

    def until(self, cond: Any, timeout: float = 30) -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while not seen or not cond(seen[-1]):
            seen.append(self.q.get(timeout=max(deadline - time.monotonic(), 0.01)))
        return seen


def _finished(client: httpx.Client, url: str, timeout: float = 60) -> dict[str, Any]:
    return wait_for(lambda: (t := client.get(url).json())["state"] != "running" and t, timeout,  # type: ignore[no-any-return]
                    f"task {url} to end")


def _disk_with_data(client: httpx.Client, vm: str, data: dict[int, bytes], size: int, **spec: Any) -> Path:
    r = client.post("/v1/vms?wait=true", json={"name": vm, "memory_mib": 64, "start": False, "disks": [{"size_gib": 1}],
                                     **spec})
    assert r.status_code == 201, r.text
    path = Path(r.json()["disks"][0])
    with open(path, "wb") as f:  # sparse: only the given extents hold data
        f.truncate(size)
        for off, chunk in data.items():
            f.seek(off)
            f.write(chunk)
    return path


# -- clone ---------------------------------------------------------------------------------------
def test_clone_copies_disks_gives_new_identity_and_reports_progress(live: Live, client: httpx.Client,
                                                                     lv: libvirt.virConnect) -> None:
    head, tail = os.urandom(24 * MiB), os.urandom(MiB)
    src = _disk_with_data(client, "src", {0: head, 900 * MiB: tail}, 1024 * MiB,
                          nics=[{"bridge": "br0", "mac": "52:54:00:12:34:56"}])
    assert client.patch("/v1/vms/src", json={"description": "the original"}).status_code == 200
    events = Events(live)
    try:
        r = client.post("/v1/vms/src/clone", json={"name": "copy"})
        assert r.status_code == 202, r.text
        task = r.json()
        assert r.headers["location"] == task["url"] == f"/v1/tasks/{task['id']}"
        assert task["kind"] == "clone" and task["target"] == "src" and task["cancellable"]
        seen = events.until(lambda e: e.get("type") == "task" and e["task"]["state"] != "running")
    finally:
        events.stop.set()
    done = client.get(task["url"]).json()
    assert done["state"] == "succeeded" and done["progress"] == 100, done
    mine = [e["task"] for e in seen if e.get("type") == "task" and e["task"]["id"] == task["id"]]
    progress = [t["progress"] for t in mine if t["state"] == "running"]
    assert len(progress) >= 3 and progress == sorted(progress) and 0 < max(progress) < 100, progress
    assert mine[-1]["state"] == "succeeded" and mine[-1]["result"]["name"] == "copy"

    a, b = client.get("/v1/vms/src").json(), client.get("/v1/vms/copy").json()
    assert a["uuid"] != b["uuid"] and b["description"] == "the original" and b["state"] == "shutoff"
    assert a["nics"][0]["mac"] == "52:54:00:12:34:56" and b["nics"][0]["mac"] not in ("", a["nics"][0]["mac"])
    new = Path(b["disks"][0])
    assert new != src and new.parent == src.parent and new.name == "copy-disk0.qcow2"
    with open(new, "rb") as f:
        assert f.read(len(head)) == head
        f.seek(900 * MiB)
        assert f.read(len(tail)) == tail
    assert new.stat().st_size == src.stat().st_size
    assert new.stat().st_blocks * 512 < 100 * MiB  # the hole stayed a hole
    assert not [p for p in src.parent.iterdir() if ".clone-" in p.name]
    assert lv.lookupByName("copy").UUIDString() == b["uuid"]


def test_clone_is_refused_at_once_when_it_cannot_be_done(client: httpx.Client) -> None:
    _disk_with_data(client, "src", {0: b"x" * 4096}, MiB)
    assert client.post("/v1/vms/src/clone", json={"name": "src"}).json()["field"] == "name"
    r = client.post("/v1/vms/src/clone", json={"name": "test"})
    assert r.status_code == 409 and r.json()["field"] == "name" and "exists" in r.json()["error"]
    r = client.post("/v1/vms/test/clone", json={"name": "t2"})  # running
    assert r.status_code == 409 and "shut" in r.json()["hint"]
    assert client.post("/v1/vms/nope/clone", json={"name": "t3"}).status_code == 404
    r = client.post("/v1/vms/src/clone", json={"name": "c", "colour": 1})
    assert r.status_code == 422 and r.json()["field"] == "colour"
    # A disk whose file is gone (the test driver keeps none of its own) cannot be copied.
    assert client.post("/v1/vms?wait=true", json={"name": "nofile", "memory_mib": 16, "start": False,
                                        "disks": [{"size_gib": 1}]}).status_code == 201
    r = client.post("/v1/vms/nofile/clone", json={"name": "t4"})
    assert r.status_code == 409 and "cannot be read" in r.json()["error"], r.text
    assert client.get("/v1/storage/volumes/t4-disk0.qcow2").status_code == 404
    assert client.get("/v1/vms/t2").status_code == 404
    assert {t["kind"] for t in client.get("/v1/tasks").json()} == {"create"}  # no clone task was made


def test_cancelled_clone_leaves_nothing(live: Live, client: httpx.Client) -> None:
    src = _disk_with_data(client, "big", {0: os.urandom(256 * MiB)}, 256 * MiB)
    events = Events(live)
    try:
        r = client.post("/v1/vms/big/clone", json={"name": "big2"})
        assert r.status_code == 202
        url = r.json()["url"]
        # Cancel on the first progress event: the copy is 64 blocks long, and stops at the next one.
        events.until(lambda e: e.get("type") == "task" and e["task"]["progress"] > 0)
        # Meanwhile both VMs and the volume being written are off limits.
        for method, path in (("POST", "/v1/vms/big/start"), ("DELETE", "/v1/vms/big"), ("PATCH", "/v1/vms/big"),
                             ("DELETE", "/v1/storage/volumes/big2-disk0.qcow2")):
            r = client.request(method, path, json={"vcpus": 2} if method == "PATCH" else None)
            assert r.status_code == 409 and ("clon" in r.json()["error"]), (method, path, r.text)
        r = client.post("/v1/vms?wait=true", json={"name": "big2", "memory_mib": 16, "start": False})
        assert r.status_code == 409 and r.json()["field"] == "name"
        assert client.get("/v1/vms/big").json()["busy"] == "being cloned to 'big2'"
        r = client.post(f"{url}/cancel")
        assert r.status_code == 202 and r.json()["cancel_requested"], r.text
    finally:
        events.stop.set()
    t = _finished(client, url)
    assert t["state"] == "cancelled" and t["error"]["status"] == 409, t
    assert client.get("/v1/vms/big2").status_code == 404
    assert sorted(p.name for p in src.parent.iterdir()) == ["big-disk0.qcow2"]  # no copy, no temp file
    assert client.get("/v1/storage/volumes/big2-disk0.qcow2").status_code == 404
    assert client.post(f"{url}/cancel").status_code == 409  # ended already
    # The source is free again.
    assert client.get("/v1/vms/big").json()["busy"] is None
    assert client.post("/v1/vms/big/start").status_code == 200


# -- background create / snapshot, the task list ---------------------------------------------------
def test_a_cancelled_snapshot_leaves_no_snapshot(client: httpx.Client, server: LiveServer) -> None:
    """The snapshot service with a task cancelled before libvirt is asked (the real libvirtd test cancels
    one half-way): Cancelled, no snapshot, the VM free again — with memory and disk-only."""
    from qx_node.snapshots import SnapshotRequest
    from qx_node.tasks import Cancelled

    assert client.post("/v1/vms?wait=true", json={"name": "cs", "memory_mib": 64, "disks": [{"size_gib": 1}]}).status_code == 201
    node = server.node
    for memory in (True, False):
        with pytest.raises(Cancelled):
            with node.tasks.track("snapshot", "cs", cancellable=True) as task:
                node.tasks.cancel(task.id)
                node.snapshots.create("cs", SnapshotRequest(f"c-{memory}".lower(), memory=memory), task)
        assert client.get(task.url).json()["state"] == "cancelled"
        assert client.get("/v1/vms/cs/snapshots").json()["count"] == 0
        assert client.get("/v1/vms/cs").json()["busy"] is None


def _my_task_events(seen: list[dict[str, Any]], task_id: str) -> list[dict[str, Any]]:
    return [e["task"] for e in seen if e.get("type") == "task" and e["task"]["id"] == task_id]


def test_create_and_snapshot_answer_202_at_once_with_the_task(live: Live, client: httpx.Client) -> None:
    """The long operations' default (qx_node.api.longops): 202, Location the task, the body the task;
    progress as 'task' events on the SSE stream; the VM and the snapshot exist once it has succeeded."""
    events = Events(live)
    try:
        r = client.post("/v1/vms", json={"name": "bg", "memory_mib": 64, "disks": [{"size_gib": 2}, {"size_gib": 1}]})
        assert r.status_code == 202, r.text
        task = r.json()
        assert r.headers["location"] == task["url"] == f"/v1/tasks/{task['id']}"
        # The task as it is when answered: the test driver is quick, so it may have ended already.
        assert task["kind"] == "create" and task["target"] == "bg" and task["state"] in ("running", "succeeded"), task
        seen = events.until(lambda e: e.get("type") == "task" and e["task"]["id"] == task["id"]
                            and e["task"]["state"] != "running")
        mine = _my_task_events(seen, task["id"])
        progress = [t["progress"] for t in mine if t["state"] == "running"]
        assert any(0 < p < 100 for p in progress) and progress == sorted(progress), progress
        assert mine[-1]["state"] == "succeeded" and mine[-1]["progress"] == 100, mine[-1]
        assert mine[-1]["result"]["name"] == "bg" and len(mine[-1]["result"]["disks"]) == 2
        vm = client.get("/v1/vms/bg").json()
        assert vm["state"] == "running" and len(vm["disks"]) == 2 and vm["busy"] is None, vm

        r = client.post("/v1/vms/bg/snapshots", json={"name": "s1"})
        assert r.status_code == 202 and r.headers["location"] == r.json()["url"], r.text
        assert r.json()["kind"] == "snapshot" and r.json()["target"] == "bg"
        seen = events.until(lambda e: e.get("type") == "task" and e["task"]["id"] == r.json()["id"]
                            and e["task"]["state"] != "running")
    finally:
        events.stop.set()
    t = client.get(r.json()["url"]).json()
    assert t["state"] == "succeeded" and t["result"]["memory"] is True and t["result"]["name"] == "s1", t
    assert t["progress"] == 100 and t["message"] == "done", t
    assert client.get("/v1/vms/bg/snapshots/s1").json()["memory"] is True
    assert client.get("/v1/vms/bg").json()["busy"] is None  # busy only while it was taken
    r = client.post(f"{t['url']}/cancel")
    assert r.status_code == 409 and "succeeded" in r.json()["error"]
    assert client.get("/v1/tasks/" + "f" * 32).status_code == 404
    assert client.get("/v1/tasks/not-an-id").status_code == 422
    # The old opt-in is gone, and not silently ignored: 202 is the default, wait=true the opt-out.
    r = client.post("/v1/vms?background=true", json={"name": "old", "memory_mib": 16, "start": False})
    assert r.status_code == 422 and r.json()["field"] == "background" and "wait" in r.json()["hint"], r.text


def test_wait_true_answers_with_the_result(client: httpx.Client) -> None:
    r = client.post("/v1/vms?wait=true", json={"name": "w", "memory_mib": 64, "start": False,
                                               "disks": [{"size_gib": 1}]})
    assert r.status_code == 201 and r.headers["location"] == "/v1/vms/w", r.text
    assert r.json()["name"] == "w" and len(r.json()["disks"]) == 1
    t = client.get(r.headers["x-qx-task"]).json()  # it was a task all the same
    assert t["kind"] == "create" and t["state"] == "succeeded" and t["result"] == r.json(), t
    r = client.post("/v1/vms/w/snapshots?wait=true", json={"name": "cold"})
    assert r.status_code == 201 and r.headers["location"] == "/v1/vms/w/snapshots/cold", r.text
    assert r.json()["name"] == "cold" and r.json()["memory"] is False
    Path(client.get("/v1/vms/w").json()["disks"][0]).write_bytes(b"disk" * 1024)  # what the clone copies
    r = client.post("/v1/vms/w/clone?wait=true", json={"name": "w2"})
    assert r.status_code == 201 and r.headers["location"] == "/v1/vms/w2", r.text
    assert r.json()["name"] == "w2" and r.json()["uuid"] != client.get("/v1/vms/w").json()["uuid"]
    # Refusals are the same 4xx either way, before any task.
    r = client.post("/v1/vms?wait=true", json={"name": "w", "memory_mib": 64})
    assert r.status_code == 409 and r.json()["field"] == "name" and "x-qx-task" not in r.headers, r.text
    assert len(client.get("/v1/tasks").json()) == 3


def test_long_operations_refuse_at_once_and_make_no_task(client: httpx.Client, server: LiveServer) -> None:
    """Bad input (422) and what cannot be done (404, 409) come back synchronously; bad input never
    makes a task, nor does a refusal."""
    assert client.post("/v1/vms", json={"name": "here", "memory_mib": 64, "start": False}).status_code == 202
    wait_for(lambda: client.get("/v1/vms/here").status_code == 200, 20, "VM 'here' to be created")
    assert client.post("/v1/storage/volumes", json={"name": "taken-disk0.qcow2", "size_gib": 1}).status_code == 201
    free = client.get("/v1/host/capacity").json()["memory"]["free_mib"]
    before = client.get("/v1/tasks").json()
    for path, body, status, field in (
            ("/v1/vms", {"name": "bad name", "memory_mib": 64}, 422, "name"),
            ("/v1/vms", {"name": "x", "memory_mib": 64, "colour": "red"}, 422, "colour"),
            ("/v1/vms", {"name": "here", "memory_mib": 64}, 409, "name"),
            ("/v1/vms", {"name": "taken", "memory_mib": 64, "disks": [{"size_gib": 1}]}, 409, "disks[0]"),
            ("/v1/vms", {"name": "x", "memory_mib": 64, "disks": [{"volume": "missing.qcow2"}]}, 404, "disks[0].volume"),
            ("/v1/vms", {"name": "x", "memory_mib": free + 1}, 409, "memory_mib"),
            ("/v1/vms/nope/snapshots", {"name": "s"}, 404, None),
            ("/v1/vms/here/snapshots", {"name": "s", "memory": True}, 409, "memory"),
            ("/v1/vms/here/snapshots", {"name": "s", "extra": 1}, 422, "extra"),
            ("/v1/vms/nope/clone", {"name": "c"}, 404, None),
            ("/v1/vms/test/clone", {"name": "c"}, 409, None),  # running
            ("/v1/vms/here/clone", {"name": "here"}, 422, "name")):
        for query in ("", "?wait=true"):
            r = client.post(path + query, json=body)
            assert r.status_code == status and set(r.json()) == {"error", "field", "hint"}, (path, body, r.text)
            assert r.json()["field"] == field and "x-qx-task" not in r.headers, (path, body, r.text)
    r = client.post("/v1/vms", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert client.get("/v1/tasks").json() == before  # not one task more
    assert client.get("/v1/vms/x").status_code == 404
    # Running tasks are bounded too (threads): over the limit, refused before anything is done.
    server.node.tasks.max_running = 0
    r = client.post("/v1/vms", json={"name": "over", "memory_mib": 16, "start": False})
    assert r.status_code == 409 and "tasks are running" in r.json()["error"], r.text
    server.node.tasks.max_running = 16
    assert client.get("/v1/vms/over").status_code == 404
    # ... and the name it would have held is free again.
    r = client.post("/v1/vms?wait=true", json={"name": "over", "memory_mib": 16, "start": False})
    assert r.status_code == 201, r.text


def test_task_history_is_bounded(client: httpx.Client, server: LiveServer) -> None:
    """Finished tasks beyond the history are forgotten, oldest first."""
    server.node.tasks.history = 3
    urls = [client.post("/v1/vms", json={"name": f"h{i}", "memory_mib": 16, "start": False}).json()["url"]
            for i in range(5)]
    wait_for(lambda: all(t["state"] != "running" for t in client.get("/v1/tasks").json()), 20, "tasks to end")
    listed = client.get("/v1/tasks").json()
    assert len(listed) == 3 and listed[0]["url"] == urls[-1]  # newest first
    assert client.get(urls[0]).status_code == 404
    assert sorted(v["name"] for v in client.get("/v1/vms").json() if v["name"].startswith("h")) == \
        [f"h{i}" for i in range(5)]


@pytest.fixture
def full_pool(tmp_path: Path) -> Iterator[LiveServer]:
    """A node whose pool directory is a 24 MiB tmpfs: a real filesystem that fills up."""
    pool = tmp_path / "pool"
    pool.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(pool)], check=True)
    try:
        srv = LiveServer(make_settings(tmp_path))
        with srv:
            yield srv
    finally:
        subprocess.run(["umount", str(pool)], check=True)


def test_a_failure_while_the_task_runs_is_the_tasks_error(full_pool: LiveServer) -> None:
    """Thin provisioning allowed (overcommit_disk), the copy of a clone fills the pool: the clone was
    accepted (202), its task fails with the {"error", "field", "hint"} of the failure (and its status),
    and nothing of it is left. With wait=true the same failure is the answer."""
    live = full_pool.live
    with httpx.Client(base_url=live.url, verify=ssl.create_default_context(cafile=str(live.cert)),
                      headers=live.auth, timeout=60) as client:
        assert client.patch("/v1/host/settings", json={"overcommit_disk": True}).status_code == 200
        src = _disk_with_data(client, "src", {0: os.urandom(16 * MiB)}, 16 * MiB)
        pool = src.parent
        for query in ("", "?wait=true"):
            r = client.post(f"/v1/vms/src/clone{query}", json={"name": "copy"})
            if query:
                assert r.status_code == 502 and set(r.json()) == {"error", "field", "hint"}, r.text
                t = client.get(r.headers["x-qx-task"]).json()
                assert r.json() == {k: t["error"][k] for k in ("error", "field", "hint")}, (r.json(), t)
            else:
                assert r.status_code == 202, r.text
                t = _finished(client, r.headers["location"])
            assert t["state"] == "failed" and t["error"]["status"] == 502, t
            assert set(t["error"]) == {"status", "error", "field", "hint"}, t
            assert "No space left on device" in t["error"]["error"] and "free space" in t["error"]["hint"], t
            assert client.get("/v1/vms/copy").status_code == 404
            assert sorted(p.name for p in pool.iterdir()) == ["src-disk0.qcow2"]  # no copy, no temp file
            assert client.get("/v1/vms/src").json()["busy"] is None


# -- ISO upload as a task ---------------------------------------------------------------------------
def test_upload_is_a_task_with_progress_and_can_be_cancelled(live: Live, client: httpx.Client) -> None:
    with RawClient(live) as c:
        c.start("PUT", "/v1/storage/isos/slow.iso", {"content-length": str(8 * MiB),
                                                      "content-type": "application/octet-stream"})
        c.data(b"\0" * (2 * MiB + 1))  # two blocks written, the upload then waits for the rest
        task = wait_for(lambda: next((t for t in client.get("/v1/tasks").json()
                                      if t["kind"] == "upload" and t["progress"] >= 12), None), 10, "upload progress")
        assert task["state"] == "running" and task["target"] == "slow.iso" and task["progress"] < 100
        assert client.post(f"{task['url']}/cancel").status_code == 202
        c.data(b"\0" * (2 * MiB))  # the next block sees the cancel
        r = c.response()
    assert r.status == 409 and "cancelled" in r.json()["error"], r.body
    assert client.get(task["url"]).json()["state"] == "cancelled"
    assert not list(live.node.storage.pool_dir.glob("*slow.iso*"))
    r = client.put("/v1/storage/isos/ok.iso", content=b"iso" * 1000)
    assert r.status_code == 201 and client.get(r.headers["x-qx-task"]).json()["state"] == "succeeded"


# -- capacity -------------------------------------------------------------------------------------------
def test_vms_that_do_not_fit_are_refused_unless_overcommit(live: Live, client: httpx.Client,
                                                           tmp_path: Path) -> None:
    cap = client.get("/v1/host/capacity").json()
    # The test driver's host: 3 GiB, 2 GiB of them given to its running 'test' VM, 5 % reserved.
    assert cap["memory"]["total_mib"] == 3072 and cap["memory"]["committed_mib"] == 2048
    free = cap["memory"]["free_mib"]
    assert free == 3072 - 2048 - 153 and cap["memory"]["reserve_mib"] == 153
    r = client.post("/v1/vms?wait=true", json={"name": "big", "memory_mib": free + 1})
    assert r.status_code == 409 and r.json()["field"] == "memory_mib", r.text
    assert f"{free + 1} MiB" in r.json()["error"] and f"{free} MiB are free" in r.json()["error"]
    assert "overcommit_memory" in r.json()["hint"]
    assert client.get("/v1/vms/big").status_code == 404  # nothing defined
    # Defined without starting is fine; starting it is refused the same way.
    assert client.post("/v1/vms?wait=true", json={"name": "big", "memory_mib": free + 1, "start": False}).status_code == 201
    r = client.post("/v1/vms/big/start")
    assert r.status_code == 409 and r.json()["field"] == "memory_mib"
    # Disks: the full size must fit in the pool.
    avail = cap["disk"]["available"]
    r = client.post("/v1/vms?wait=true", json={"name": "fat", "memory_mib": 16, "start": False,
                                     "disks": [{"size_gib": avail // 1024**3 + 1}]})
    assert r.status_code == 409 and r.json()["field"] == "disks" and "overcommit_disk" in r.json()["hint"]
    assert client.get("/v1/storage/volumes/fat-disk0.qcow2").status_code == 404
    r = client.post("/v1/storage/volumes", json={"name": "fat.img", "size_gib": avail // 1024**3 + 1})
    assert r.status_code == 409 and r.json()["field"] == "size_gib"

    r = client.patch("/v1/host/settings", json={"overcommit_memory": True, "overcommit_disk": True})
    assert r.status_code == 200 and r.json()["overcommit_memory"] is True
    assert json.loads((tmp_path / "state" / "host-settings.json").read_text())["overcommit_memory"] is True
    assert client.post("/v1/vms/big/start").status_code == 200
    r = client.post("/v1/vms?wait=true", json={"name": "fat", "memory_mib": 16, "start": False,
                                     "disks": [{"size_gib": avail // 1024**3 + 1}]})
    assert r.status_code == 201, r.text
    r = client.patch("/v1/host/settings", json={"overcommit_memory": "yes"})
    assert r.status_code == 422 and r.json()["field"] == "overcommit_memory"
    assert client.patch("/v1/host/settings", json={}).status_code == 422


def test_parallel_starts_cannot_overbook_memory(live: Live, client: httpx.Client) -> None:
    """Two VMs that each fit but not together, started at the same moment by two clients: one runs."""
    import concurrent.futures

    free = client.get("/v1/host/capacity").json()["memory"]["free_mib"]
    size = free // 2 + 16
    for name in ("p1", "p2"):
        assert client.post("/v1/vms?wait=true", json={"name": name, "memory_mib": size, "start": False}).status_code == 201
    barrier = threading.Barrier(2)

    def start(name: str) -> int:
        with httpx.Client(base_url=live.url, verify=ssl.create_default_context(cafile=str(live.cert)),
                          headers=live.auth, timeout=30) as c:
            barrier.wait()
            return c.post(f"/v1/vms/{name}/start").status_code

    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        codes = sorted(ex.map(start, ("p1", "p2")))
    assert codes == [200, 409], codes
    states = sorted(client.get(f"/v1/vms/{n}").json()["state"] for n in ("p1", "p2"))
    assert states == ["running", "shutoff"]


# -- maintenance and power ---------------------------------------------------------------------------------
def test_maintenance_stops_vms_refuses_starts_and_guards_reboot(server: LiveServer, client: httpx.Client,
                                                              lv: libvirt.virConnect) -> None:
    power: MemoryPower = server.power
    assert client.post("/v1/vms?wait=true", json={"name": "m1", "memory_mib": 64}).status_code == 201
    r = client.post("/v1/host/reboot")
    assert r.status_code == 409 and r.json()["field"] == "force" and "m1" in r.json()["error"]
    assert power.actions == []

    r = client.post("/v1/host/maintenance", json={"enabled": True, "stop_vms": "stop"})
    assert r.status_code == 202, r.text
    t = _finished(client, r.headers["location"])
    assert t["state"] == "succeeded" and {"m1", "test"} <= set(t["result"]["stopped"]), t
    assert t["result"]["still_running"] == []
    assert lv.lookupByName("m1").state()[0] == libvirt.VIR_DOMAIN_SHUTOFF
    assert client.get("/v1/host/maintenance").json() == {"maintenance": True}
    r = client.post("/v1/vms/m1/start")
    assert r.status_code == 409 and "maintenance" in r.json()["error"] and "enabled" in r.json()["hint"]
    assert client.post("/v1/vms?wait=true", json={"name": "m2", "memory_mib": 64}).status_code == 409
    assert client.post("/v1/vms?wait=true", json={"name": "m2", "memory_mib": 64, "start": False}).status_code == 201

    # Kept across a restart of qx-node (a new node on the same state directory).
    settings = server.node.settings
    from qx_node.node import Node

    assert Node(settings, power=MemoryPower()).config.current.maintenance is True

    r = client.post("/v1/host/reboot")
    assert r.status_code == 202 and r.json()["action"] == "reboot"
    assert power.done.wait(10) and power.actions == ["reboot"]

    assert client.post("/v1/host/maintenance", json={"enabled": False}).json() == {"maintenance": False}
    assert client.post("/v1/vms/m1/start").status_code == 200
    assert client.post("/v1/host/shutdown", json={}).status_code == 409
    power.done.clear()
    r = client.post("/v1/host/shutdown", json={"force": True})
    assert r.status_code == 202
    assert power.done.wait(10) and power.actions == ["reboot", "poweroff"]
    for bad, field in (({"enabled": "yes"}, "enabled"), ({}, "enabled"), ({"enabled": False, "stop_vms": "stop"}, "stop_vms"),
                       ({"enabled": True, "stop_vms": "kill"}, "stop_vms")):
        r = client.post("/v1/host/maintenance", json=bad)
        assert r.status_code == 422 and r.json()["field"] == field, (bad, r.text)
    r = client.post("/v1/host/reboot", json={"force": 1})
    assert r.status_code == 422 and r.json()["field"] == "force"
    # ACPI shutdown of the running VMs (the test driver's guests obey at once).
    r = client.post("/v1/host/maintenance", json={"enabled": True, "stop_vms": "shutdown"})
    t = _finished(client, r.headers["location"])
    assert t["state"] == "succeeded" and "m1" in t["result"]["stopped"] and t["result"]["still_running"] == [], t
    assert lv.lookupByName("m1").state()[0] == libvirt.VIR_DOMAIN_SHUTOFF
