"""Integration: the API against a real libvirtd + QEMU (TCG), started and stopped by this test by PID.

A VM is created through the API: direct kernel boot of a tiny guest (the host's Debian kernel and a
busybox initrd packed by tests/node/guest.py, both in the pool) plus a new qcow2 disk. The test
reads the guest's serial console from its host pty (where ``virsh console`` attaches) until ``/init`` reports
that its ACPI power-button watcher is armed. libvirtd is then restarted: the node reconnects by
itself, lifecycle events keep arriving on the SSE stream and the VM keeps running. ``POST
/v1/vms/{name}/shutdown`` (ACPI power button) must make the guest power itself off (shutoff with
reason "shutdown", no forced stop), then the VM is deleted with its disk.

A second test takes snapshots of such a VM: a disk-only one while shut off (reverting brings back the
disk content written before it, checked with ``qemu-io``) and one with memory while running
(reverting to it while shut off leaves the VM running). A third opens the VM's consoles through the
API's WebSocket proxy with one-time tickets: the guest's serial output, and QEMU's VNC greeting.
"""

from __future__ import annotations

import json
import os
import queue
import select
import shutil
import subprocess
import tempfile
import threading
import time
import tty
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.node import guest
from tests.node.conftest import LiveServer, make_settings, wait_for

pytestmark = [pytest.mark.root, pytest.mark.libvirtd]
URI = "qemu:///system"


class Daemons:
    """virtlogd + libvirtd in the foreground as our children (so we stop exactly what we started)."""

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> None:
        # Long-running daemons need Popen; qx_common.run.run is for commands that finish.
        self.procs[name] = subprocess.Popen([shutil.which(name) or name], stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self, name: str) -> None:
        p = self.procs.pop(name)
        p.terminate()
        # libvirtd 11 here sometimes spends its whole 30 s shutdown watchdog in a driver's shutdown
        # step ("Shutdown wait timed out", then it exits by itself): wait past that, then kill.
        try:
            p.wait(45)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)
            raise AssertionError(f"{name} did not exit within 45 s of SIGTERM (killed)") from None

    def libvirtd_answers(self) -> bool:
        import libvirt

        try:
            libvirt.open(URI).close()
        except libvirt.libvirtError:
            return False
        return True


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    if os.geteuid() != 0 or not shutil.which("libvirtd"):
        pytest.fail("needs root and libvirtd (tests/host-packages.txt: libvirt-daemon-system)")
    if subprocess.run(["pgrep", "-x", "libvirtd"], capture_output=True).returncode == 0:
        pytest.fail("a libvirtd is already running here; this test starts and restarts its own")
    os.makedirs("/run/libvirt", exist_ok=True)
    d = Daemons()
    d.start("virtlogd")
    d.start("libvirtd")
    try:
        wait_for(d.libvirtd_answers, 30, "libvirtd to answer")
        yield d
    finally:
        for name in list(d.procs)[::-1]:
            d.stop(name)


class SerialPty:
    """The guest's first serial port, read from its host pty (what ``virsh console`` attaches to).

    Reading the pty directly, not through a libvirt console stream, keeps libvirtd free of an open
    stream when the test restarts it. The pty is put in raw mode so nothing is echoed to the guest.
    """

    def __init__(self, dom_name: str) -> None:
        import libvirt
        import xml.etree.ElementTree as ET

        conn = libvirt.open(URI)
        try:
            xml = conn.lookupByName(dom_name).XMLDesc(0)
        finally:
            conn.close()
        src = ET.fromstring(xml).find("devices/serial[@type='pty']/source")
        assert src is not None and src.get("path"), "the live domain has no serial pty"
        self.fd = os.open(src.get("path", ""), os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.fd)
        self.buf = bytearray()

    @property
    def text(self) -> str:
        while select.select([self.fd], [], [], 0)[0]:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            if not data:
                break
            self.buf += data
        return self.buf.decode(errors="replace")

    def close(self) -> None:
        os.close(self.fd)


@pytest.fixture
def pool() -> Iterator[Path]:
    # QEMU runs as libvirt-qemu: the pool must be reachable for it (pytest's tmp dirs are 0700).
    base = Path(tempfile.mkdtemp(prefix="qx-node-pool-", dir="/var/tmp"))
    base.chmod(0o755)
    yield base / "pool"
    shutil.rmtree(base, ignore_errors=True)


def test_vm_through_a_real_libvirtd(daemons: Daemons, pool: Path, tmp_path: Path) -> None:
    # No --virt-type: the node picks KVM only where it can really run guests (vmx/svm + /dev/kvm),
    # else TCG — on these CI machines /dev/kvm exists but cannot run guests, so this must pick qemu.
    settings = make_settings(tmp_path, URI, pool_name="qx-test-pool")
    settings = type(settings)(**{**settings.__dict__, "pool_dir": pool})
    guest.build_guest(pool)  # files copied into the pool appear as volumes (the pool is refreshed)
    events: queue.Queue[dict] = queue.Queue()
    with LiveServer(settings) as live:
        h = live.auth

        def reader() -> None:
            try:
                with httpx.Client(verify=str(live.cert), timeout=None) as c:
                    with c.stream("GET", f"{live.url}/v1/events", headers=h) as r:
                        for line in r.iter_lines():
                            if line.startswith("data: "):
                                events.put(json.loads(line[6:]))
            except httpx.HTTPError:
                pass  # the server stops at the end of the test

        threading.Thread(target=reader, daemon=True).start()
        assert events.get(timeout=10)["type"] == "snapshot"

        def wait_event(pred, what: str) -> dict:  # type: ignore[no-untyped-def]
            seen = []
            while True:
                try:
                    e = events.get(timeout=60)
                except queue.Empty:
                    raise AssertionError(f"no event {what}; saw {seen}") from None
                seen.append(e)
                if pred(e):
                    return e

        c = httpx.Client(verify=str(live.cert), headers=h, base_url=live.url, timeout=60)
        try:
            spec = {"name": "qx-it", "memory_mib": 128, "disks": [{"size_gib": 1}],
                    "kernel": guest.KERNEL_NAME, "initrd": guest.INITRD_NAME, "cmdline": guest.CMDLINE}
            r = c.post("/v1/vms?wait=true", json=spec)
            assert r.status_code == 201, r.text
            assert (pool / "qx-it-disk0.qcow2").exists()
            import libvirt

            from qx_build.qemu import kvm_usable

            conn = libvirt.open(URI)
            try:
                dom_type = ET.fromstring(conn.lookupByName("qx-it").XMLDesc()).get("type")
            finally:
                conn.close()
            assert dom_type == ("kvm" if kvm_usable() else "qemu"), dom_type
            console = SerialPty("qx-it")  # at once: QEMU drops serial output nobody reads
            try:
                wait_event(lambda e: e.get("vm") == "qx-it" and e.get("state") == "running", "VM started")
                vm = c.get("/v1/vms/qx-it").json()
                assert vm["state"] == "running" and vm["console"]["port"] >= 5900
                wait_for(lambda: guest.READY in console.text or guest.NO_BUTTON in console.text, 90,
                         "the guest's /init to arm its power-button watcher")
                assert guest.NO_BUTTON not in console.text, console.text
            finally:
                console.close()
            assert c.get("/v1/vms/qx-it/stats").json()["cpu_time_ns"] > 0

            # libvirtd restarts: the VM keeps running, the node reconnects, events continue.
            daemons.stop("libvirtd")
            wait_event(lambda e: e.get("type") == "connection" and e["state"] == "disconnected", "disconnect")
            assert c.get("/v1/vms").status_code == 503
            daemons.start("libvirtd")
            wait_event(lambda e: e.get("type") == "connection" and e["state"] == "connected", "reconnect")
            assert c.get("/v1/vms/qx-it").json()["state"] == "running"

            # A clean shutdown: the ACPI power button, and the guest powers itself off (no forced stop).
            assert c.post("/v1/vms/qx-it/shutdown").status_code == 200
            e = wait_event(lambda e: e.get("vm") == "qx-it" and e.get("state") == "shutoff",
                           "the guest to power off after the ACPI shutdown")
            assert e["event"] == "stopped" and e["detail"] == "shutdown", e  # the guest's own power-off
            assert c.get("/v1/vms/qx-it").json()["state"] == "shutoff"
            r = c.delete("/v1/vms/qx-it", params={"remove_disks": "true"})
            assert r.json()["removed_volumes"] == ["qx-it-disk0.qcow2"]
            assert not (pool / "qx-it-disk0.qcow2").exists()

            # Restart-on-crash: kill QEMU under a VM that asks for it; the node starts it again.
            r = c.post("/v1/vms?wait=true", json={"name": "qx-crash", "memory_mib": 64, "restart_on_crash": True})
            assert r.status_code == 201, r.text
            pid = int(Path("/run/libvirt/qemu/qx-crash.pid").read_text())
            os.kill(pid, 9)
            wait_event(lambda e: e.get("type") == "restart-on-crash" and e.get("vm") == "qx-crash", "restart")
            assert c.get("/v1/vms/qx-crash").json()["state"] == "running"
            assert int(Path("/run/libvirt/qemu/qx-crash.pid").read_text()) != pid
        finally:
            c.delete("/v1/vms/qx-crash", params={"force": "true"})
            c.delete("/v1/vms/qx-it", params={"remove_disks": "true", "force": "true"})
            c.close()
            import libvirt

            conn = libvirt.open(URI)
            try:
                p = conn.storagePoolLookupByName("qx-test-pool")
                if p.isActive():
                    p.destroy()
                p.undefine()
            except libvirt.libvirtError:
                pass
            conn.close()


def _qemu_io(image: Path, command: str) -> str:
    r = subprocess.run(["qemu-io", "-f", "qcow2", "-c", command, str(image)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "failed" not in r.stdout + r.stderr, (command, r.stdout, r.stderr)
    return r.stdout


def test_snapshots_through_a_real_libvirtd(daemons: Daemons, pool: Path, tmp_path: Path) -> None:
    """Internal qcow2 snapshots on QEMU: reverting brings the disk's content back (written with qemu-io
    while the VM is shut off), and a snapshot with memory brings the VM back running."""
    settings = make_settings(tmp_path, URI, pool_name="qx-test-pool")
    settings = type(settings)(**{**settings.__dict__, "pool_dir": pool})
    guest.build_guest(pool)
    with LiveServer(settings) as live:
        c = httpx.Client(verify=str(live.cert), headers=live.auth, base_url=live.url, timeout=120)
        try:
            spec = {"name": "qx-snap", "memory_mib": 128, "disks": [{"size_gib": 1}], "start": False,
                    "kernel": guest.KERNEL_NAME, "initrd": guest.INITRD_NAME, "cmdline": guest.CMDLINE}
            assert c.post("/v1/vms?wait=true", json=spec).status_code == 201
            disk = pool / "qx-snap-disk0.qcow2"
            _qemu_io(disk, "write -P 0xaa 0 64k")
            r = c.post("/v1/vms/qx-snap/snapshots?wait=true", json={"name": "before"})
            assert r.status_code == 201 and r.json()["memory"] is False, r.text
            _qemu_io(disk, "write -P 0xbb 0 64k")
            _qemu_io(disk, "read -P 0xbb 0 64k")
            r = c.post("/v1/vms/qx-snap/snapshots/before/revert")
            assert r.status_code == 200 and r.json()["state"] == "shutoff", r.text
            _qemu_io(disk, "read -P 0xaa 0 64k")  # the content at the snapshot is back

            # With memory: taken running, reverted to while shut off, the VM is running again.
            assert c.post("/v1/vms/qx-snap/start").status_code == 200
            r = c.post("/v1/vms/qx-snap/snapshots?wait=true", json={"name": "running", "description": "booted"})
            assert r.status_code == 201 and r.json()["memory"] is True and r.json()["parent"] == "before", r.text
            assert c.post("/v1/vms/qx-snap/stop").status_code == 200
            r = c.post("/v1/vms/qx-snap/snapshots/running/revert")
            assert r.status_code == 200 and r.json()["state"] == "running", r.text
            tree = c.get("/v1/vms/qx-snap/snapshots").json()
            assert tree["current"] == "running" and [s["name"] for s in tree["snapshots"]] == ["before"]
            assert [s["name"] for s in tree["snapshots"][0]["children"]] == ["running"]
            assert c.delete("/v1/vms/qx-snap/snapshots/running").status_code == 200
            r = c.delete("/v1/vms/qx-snap", params={"remove_disks": "true", "force": "true"})
            assert r.status_code == 200 and r.json()["removed_volumes"] == ["qx-snap-disk0.qcow2"], r.text
        finally:
            c.delete("/v1/vms/qx-snap", params={"remove_disks": "true", "force": "true"})
            c.close()
            import libvirt

            conn = libvirt.open(URI)
            try:
                p = conn.storagePoolLookupByName("qx-test-pool")
                if p.isActive():
                    p.destroy()
                p.undefine()
            except libvirt.libvirtError:
                pass
            conn.close()


def test_consoles_through_a_real_libvirtd(daemons: Daemons, pool: Path, tmp_path: Path) -> None:
    """The console proxy with a real guest: its serial output (the guest's READY marker) read through the
    WebSocket, and QEMU's own VNC server greeting through the VNC WebSocket — both opened with a
    one-time ticket and no Authorization header, as a browser would."""
    import ssl

    import websocket  # websocket-client

    settings = make_settings(tmp_path, URI, pool_name="qx-test-pool")
    settings = type(settings)(**{**settings.__dict__, "pool_dir": pool})
    guest.build_guest(pool)
    with LiveServer(settings) as live:
        c = httpx.Client(verify=str(live.cert), headers=live.auth, base_url=live.url, timeout=60)
        sslopt = {"cert_reqs": ssl.CERT_REQUIRED, "ca_certs": str(live.cert)}
        wss = live.url.replace("https://", "wss://")
        try:
            spec = {"name": "qx-con", "memory_mib": 128, "kernel": guest.KERNEL_NAME, "initrd": guest.INITRD_NAME,
                    "cmdline": guest.CMDLINE}
            assert c.post("/v1/vms?wait=true", json=spec).status_code == 201
            t = c.post("/v1/vms/qx-con/console", params={"kind": "serial"}).json()
            ws = websocket.create_connection(wss + t["url"], sslopt=sslopt, timeout=90)
            try:
                seen = b""
                deadline = time.monotonic() + 90
                while guest.READY.encode() not in seen and time.monotonic() < deadline:
                    seen += ws.recv() or b""
                assert guest.READY.encode() in seen, seen[-2000:]
            finally:
                ws.close()
            t = c.post("/v1/vms/qx-con/console").json()
            ws = websocket.create_connection(wss + t["url"], sslopt=sslopt, timeout=30, subprotocols=["binary"])
            try:
                assert ws.recv().startswith(b"RFB 003.")
            finally:
                ws.close()
        finally:
            c.delete("/v1/vms/qx-con", params={"force": "true"})
            c.close()
            import libvirt

            conn = libvirt.open(URI)
            try:
                p = conn.storagePoolLookupByName("qx-test-pool")
                if p.isActive():
                    p.destroy()
                p.undefine()
            except libvirt.libvirtError:
                pass
            conn.close()


def test_clone_devices_and_capacity_through_a_real_libvirtd(daemons: Daemons, pool: Path, tmp_path: Path) -> None:
    """Clone on QEMU: the copy's disk holds the source's content (qemu-io), it gets a new UUID and
    boots (the guest's READY marker on its serial port); a virtio disk is hot-plugged into the
    running clone and an ISO inserted live; a VM bigger than the host's memory is refused with 409."""
    import libvirt

    settings = make_settings(tmp_path, URI, pool_name="qx-test-pool")
    settings = type(settings)(**{**settings.__dict__, "pool_dir": pool})
    guest.build_guest(pool)
    with LiveServer(settings) as live:
        c = httpx.Client(verify=str(live.cert), headers=live.auth, base_url=live.url, timeout=120)
        try:
            spec = {"name": "qx-src", "memory_mib": 128, "disks": [{"size_gib": 1}], "start": False,
                    "kernel": guest.KERNEL_NAME, "initrd": guest.INITRD_NAME, "cmdline": guest.CMDLINE}
            assert c.post("/v1/vms?wait=true", json=spec).status_code == 201
            _qemu_io(pool / "qx-src-disk0.qcow2", "write -P 0xcc 1M 64k")
            r = c.post("/v1/vms/qx-src/clone", json={"name": "qx-copy"})
            assert r.status_code == 202, r.text
            task = wait_for(lambda: (t := c.get(r.headers["location"]).json())["state"] != "running" and t, 120,
                            "the clone task")
            assert task["state"] == "succeeded", task
            copy_disk = pool / "qx-copy-disk0.qcow2"
            _qemu_io(copy_disk, "read -P 0xcc 1M 64k")
            src, copy = c.get("/v1/vms/qx-src").json(), c.get("/v1/vms/qx-copy").json()
            assert src["uuid"] != copy["uuid"] and copy["disks"] == [str(copy_disk)]

            # A medium for the clone's new CD-ROM drive, then boot it.
            assert c.post("/v1/storage/volumes", json={"name": "media.iso", "size_gib": 1, "format": "raw"}).status_code == 201
            r = c.put("/v1/vms/qx-copy/cdrom", json={"volume": "media.iso"})
            assert r.status_code == 200 and r.json()["applied"] == {"cdrom": "now"}, r.text
            assert c.post("/v1/vms/qx-copy/start").status_code == 200
            console = SerialPty("qx-copy")
            try:
                wait_for(lambda: guest.READY in console.text, 120, "the clone's guest to boot")
            finally:
                console.close()
            # Live on QEMU: a hot-plugged virtio disk, an ejected medium.
            r = c.post("/v1/vms/qx-copy/disks", json={"size_gib": 1})
            assert r.status_code == 200, r.text
            live_result = r.json()["applied"]["disks"]
            conn = libvirt.open(URI)
            try:
                live_xml = conn.lookupByName("qx-copy").XMLDesc(0)
            finally:
                conn.close()
            assert live_result == "now" and "qx-copy-disk1.qcow2" in live_xml, (live_result, live_xml)
            r = c.delete("/v1/vms/qx-copy/cdrom")
            assert r.status_code == 200 and r.json()["applied"] == {"cdrom": "now"} and r.json()["cdroms"] == []

            host_mib = c.get("/v1/host/capacity").json()["memory"]["total_mib"]
            r = c.post("/v1/vms?wait=true", json={"name": "qx-huge", "memory_mib": host_mib, "kernel": guest.KERNEL_NAME})
            assert r.status_code == 409 and r.json()["field"] == "memory_mib" and "free" in r.json()["error"], r.text
        finally:
            for vm in ("qx-copy", "qx-src", "qx-huge"):
                c.delete(f"/v1/vms/{vm}", params={"remove_disks": "true", "force": "true"})
            c.close()
            conn = libvirt.open(URI)
            try:
                p = conn.storagePoolLookupByName("qx-test-pool")
                if p.isActive():
                    p.destroy()
                p.undefine()
            except libvirt.libvirtError:
                pass
            conn.close()


def test_memory_snapshot_task_progress_races_and_cancel_through_a_real_libvirtd(
        daemons: Daemons, pool: Path, tmp_path: Path) -> None:
    """A snapshot with memory as a task on QEMU: a guest with 1000 MiB of random data in RAM takes seconds to
    save, long enough to see progress events (percent and MiB saved, from the growth of its qcow2 image),
    to race it (a second snapshot, a delete of the VM, a revert: each 409 naming the snapshot) and to cancel
    it — after which neither libvirt nor the qcow2 image (``qemu-img snapshot -l``) holds any part of it. A
    second one runs to its end and is really in the image, with its memory; while a third runs, power actions
    are refused too."""
    settings = make_settings(tmp_path, URI, pool_name="qx-test-pool")
    settings = type(settings)(**{**settings.__dict__, "pool_dir": pool})
    guest.build_guest(pool)
    events: queue.Queue[dict] = queue.Queue()
    with LiveServer(settings) as live:
        live.node.tasks.interval = 0.0  # an event per 1 % of progress (the default throttles to 2/s)

        def reader() -> None:
            try:
                with httpx.Client(verify=str(live.cert), timeout=None) as ec, \
                        ec.stream("GET", f"{live.url}/v1/events", headers=live.auth) as r:
                    for line in r.iter_lines():
                        if line.startswith("data: "):
                            events.put(json.loads(line[6:]))
            except httpx.HTTPError:
                pass  # the server stops at the end of the test

        threading.Thread(target=reader, daemon=True).start()
        assert events.get(timeout=10)["type"] == "snapshot"

        def task_events(task_id: str) -> Iterator[dict]:
            while True:
                try:
                    e = events.get(timeout=120)
                except queue.Empty:
                    raise AssertionError(f"no more events of task {task_id}") from None
                if e.get("type") == "task" and e["task"]["id"] == task_id:
                    yield e["task"]

        c = httpx.Client(verify=str(live.cert), headers=live.auth, base_url=live.url, timeout=120)
        disk = pool / "qx-mem-disk0.qcow2"
        try:
            spec = {"name": "qx-mem", "memory_mib": 1536, "disks": [{"size_gib": 1}], "kernel": guest.KERNEL_NAME,
                    "initrd": guest.INITRD_NAME, "cmdline": guest.CMDLINE + " qx.fill=1000"}
            assert c.post("/v1/vms?wait=true", json=spec).status_code == 201
            console = SerialPty("qx-mem")
            try:
                wait_for(lambda: guest.READY in console.text, 180, "the guest to fill its RAM and be ready")
            finally:
                console.close()

            r = c.post("/v1/vms/qx-mem/snapshots", json={"name": "doomed"})
            assert r.status_code == 202 and r.json()["cancellable"], r.text
            url, tid = r.json()["url"], r.json()["id"]
            seen = next(t for t in task_events(tid) if 0 < t["progress"] < 100)
            assert seen["state"] == "running" and "MiB of memory (at most 1536 MiB)" in seen["message"], seen
            r = c.post(f"{url}/cancel")
            assert r.status_code == 202 and r.json()["cancel_requested"], r.text
            # Until it has ended (libvirt cannot stop an internal snapshot half-way) and been deleted, the VM
            # is busy: refused at once, nothing waits on libvirt's job lock.
            for method, path, body in (("POST", "/v1/vms/qx-mem/snapshots", {"name": "second"}),
                                       ("DELETE", "/v1/vms/qx-mem", None), ("POST", "/v1/vms/qx-mem/stop", None),
                                       ("PATCH", "/v1/vms/qx-mem", {"description": "x"})):
                r = c.request(method, path, json=body)
                assert r.status_code == 409 and "taking snapshot 'doomed'" in r.json()["error"], (method, path, r.text)
            final = next(t for t in task_events(tid) if t["state"] != "running")
            assert final["state"] == "cancelled" and final["error"]["status"] == 409, final
            assert c.get("/v1/vms/qx-mem/snapshots").json()["count"] == 0
            image = subprocess.run(["qemu-img", "snapshot", "-l", "-U", str(disk)], capture_output=True, text=True,
                                   timeout=60)
            assert image.returncode == 0 and "doomed" not in image.stdout, image.stdout + image.stderr
            assert c.get("/v1/vms/qx-mem").json()["busy"] is None

            # To its end: progress on the way, the snapshot in libvirt and in the image, with memory.
            r = c.post("/v1/vms/qx-mem/snapshots", json={"name": "kept"})
            assert r.status_code == 202, r.text
            tid = r.json()["id"]
            progress = []
            for t in task_events(tid):
                progress.append(t["progress"])
                if t["state"] != "running":
                    break
            assert t["state"] == "succeeded" and t["result"]["memory"] is True and t["progress"] == 100, t
            assert any(0 < p < 100 for p in progress), progress
            assert progress == sorted(progress), progress
            image = subprocess.run(["qemu-img", "snapshot", "-l", "-U", str(disk)], capture_output=True, text=True,
                                   timeout=60)
            assert "kept" in image.stdout, image.stdout

            # Power actions wait for the snapshot too (libvirt, with the VM destroyed under a running internal
            # snapshot, once reported the snapshot taken and once reset the connection).
            r = c.post("/v1/vms/qx-mem/snapshots", json={"name": "third"})
            assert r.status_code == 202, r.text
            tid = r.json()["id"]
            next(t for t in task_events(tid) if 0 < t["progress"] < 100)
            for action in ("stop", "shutdown", "reboot", "pause"):
                r = c.post(f"/v1/vms/qx-mem/{action}")
                assert r.status_code == 409 and "taking snapshot 'third'" in r.json()["error"], (action, r.text)
            final = next(t for t in task_events(tid) if t["state"] != "running")
            assert final["state"] == "succeeded", final
            assert c.post("/v1/vms/qx-mem/stop").status_code == 200
        finally:
            c.delete("/v1/vms/qx-mem", params={"remove_disks": "true", "force": "true"})
            c.close()
            import libvirt

            conn = libvirt.open(URI)
            try:
                p = conn.storagePoolLookupByName("qx-test-pool")
                if p.isActive():
                    p.destroy()
                p.undefine()
            except libvirt.libvirtError:
                pass
            conn.close()
