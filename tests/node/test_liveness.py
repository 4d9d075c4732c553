"""Liveness and races against the real server (uvicorn, TLS): a libvirtd that accepts and never
answers, health that reports the latest error, uploads in parallel, an upload while libvirtd is
down, and upload I/O that must not stall other requests."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from qx_node import storage as storage_mod
from tests.node.conftest import Live, LiveServer, RawClient, make_settings, wait_for


class SilentLibvirtd:
    """A real unix socket server that accepts every connection and never says a word."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(16)
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted.append(conn)

    def close(self) -> None:
        self._stop.set()
        self.thread.join(5)
        for c in self.accepted:
            c.close()
        self.sock.close()
        self.path.unlink(missing_ok=True)


def _ctx(live: Live) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(live.cert))


def _libvirt_detail(c: httpx.Client) -> str:
    r = c.get("/health")
    assert r.status_code == 503
    comp = r.json()["components"]["libvirt"]
    assert comp["ok"] is False
    return str(comp["detail"])


def _detail_when(c: httpx.Client, pred: Any, timeout: float, what: str) -> str:
    def check() -> str | None:
        d = _libvirt_detail(c)
        return d if pred(d) else None

    return str(wait_for(check, timeout, what))


def _open_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "libvirt-open" and t.is_alive())


def test_a_libvirtd_that_never_answers_is_reported_and_health_stays_current(tmp_path: Path) -> None:
    sock = tmp_path / "libvirt-sock"
    settings = make_settings(tmp_path, f"qemu+unix:///system?socket={sock}", libvirt_connect_timeout=1.0)
    server = LiveServer(settings)
    server.node.connect_wait = 0.5
    silent = None
    with server as live, httpx.Client(base_url=live.url, verify=_ctx(live), headers=live.auth, timeout=10) as c:
        try:
            # 1. Nothing listens: the error says so.
            detail = _detail_when(c, lambda d: "No such file" in d, 10, "health to name the missing socket")
            assert str(sock) in detail
            # 2. A libvirtd that accepts and never answers: the reconnector is not stuck for ever, and
            #    health stops showing the old error.
            silent = SilentLibvirtd(sock)
            detail = _detail_when(c, lambda d: "has not answered within 1 s" in d, 20,
                                  "health to report the silent libvirtd")
            assert "No such file" not in detail, detail
            assert silent.accepted, "the node really connected to the silent server"
            # Meanwhile the API answers at once (503: not connected), and one attempt waits, not one per retry.
            t = time.monotonic()
            r = c.get("/v1/vms")
            assert r.status_code == 503 and time.monotonic() - t < 1.0, r.text
            time.sleep(2.5)
            assert _open_threads() <= 1
            assert len(silent.accepted) == 1, "a second connection while the first still waits"
            # 3. The silent server goes away: its connection ends, and health moves on again.
            silent.close()
            silent = None
            detail = _detail_when(c, lambda d: "has not answered" not in d, 20,
                                  "health to drop the timeout once the connection ended")
            assert "waiting" not in detail, detail
        finally:
            if silent is not None:
                silent.close()


def test_stopping_is_bounded_while_libvirtd_hangs(tmp_path: Path) -> None:
    sock = tmp_path / "libvirt-sock"
    silent = SilentLibvirtd(sock)
    try:
        settings = make_settings(tmp_path, f"qemu+unix:///system?socket={sock}", libvirt_connect_timeout=30.0)
        server = LiveServer(settings)
        server.node.connect_wait = 0.5
        with server:
            wait_for(lambda: silent.accepted, 10, "the node to connect")
            t = time.monotonic()
        assert time.monotonic() - t < 4.0, "node.close() waited for the hung libvirtd"
    finally:
        silent.close()


def test_upload_while_libvirtd_is_down_is_refused_before_writing(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, f"qemu+unix:///system?socket={tmp_path}/nothing-here")
    server = LiveServer(settings)
    server.node.connect_wait = 0.2
    with server as live:
        # Headers only, announcing 50 MiB: the 503 comes without waiting for a byte of the body.
        with RawClient(live, timeout=5) as c:
            c.start("PUT", "/v1/storage/isos/debian.iso", {"content-length": str(50 * 1024 * 1024)})
            r = c.response()
        assert r.status == 503 and "libvirtd" in r.json()["error"], r.body
        with httpx.Client(base_url=live.url, verify=_ctx(live), headers=live.auth, timeout=10) as hc:
            r = hc.put("/v1/storage/isos/debian.iso", content=os.urandom(1024 * 1024))
        assert r.status_code == 503, r.text
    pool = settings.pool_dir
    assert not pool.exists() or list(pool.iterdir()) == [], list(pool.iterdir())


def _slow_body(data: bytes, pieces: int = 16, pause: float = 0.02) -> Iterator[bytes]:
    step = len(data) // pieces + 1
    for i in range(0, len(data), step):
        time.sleep(pause)
        yield data[i:i + step]


def test_parallel_uploads_of_one_name(live: Live) -> None:
    """Eight clients upload different contents under one name at the same moment: one wins, whole;
    the others get 409; no temporary file is left, none is another's."""
    n = 8
    contents = [bytes([i]) * (3 * 1024 * 1024 + i) for i in range(n)]
    results: dict[int, httpx.Response] = {}
    barrier = threading.Barrier(n)

    def upload(i: int) -> None:
        with httpx.Client(base_url=live.url, verify=_ctx(live), headers=live.auth, timeout=60) as c:
            barrier.wait()
            results[i] = c.put("/v1/storage/isos/same.iso", content=_slow_body(contents[i]),
                               headers={"content-length": str(len(contents[i]))})

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    codes = sorted(r.status_code for r in results.values())
    assert codes == [201] + [409] * (n - 1), {i: (r.status_code, r.text[:120]) for i, r in results.items()}
    winner = next(i for i, r in results.items() if r.status_code == 201)
    pool = live.node.storage.pool_dir
    assert (pool / "same.iso").read_bytes() == contents[winner]
    assert sorted(p.name for p in pool.iterdir()) == ["same.iso"]  # no temporary files


def test_an_upload_never_replaces_a_file_that_appeared_meanwhile(live: Live) -> None:
    pool = live.node.storage.pool_dir
    first = b"created by someone else\n"

    def body() -> Iterator[bytes]:
        yield b"A" * 65536
        # The server passed its checks and writes its temporary file: now the name appears.
        wait_for(lambda: list(pool.glob(".race.iso.upload-*")), 10, "the upload's temporary file")
        (pool / "race.iso").write_bytes(first)
        yield b"B" * 65536

    with httpx.Client(base_url=live.url, verify=_ctx(live), headers=live.auth, timeout=30) as c:
        r = c.put("/v1/storage/isos/race.iso", content=body(), headers={"content-length": str(2 * 65536)})
    assert r.status_code == 409 and r.json()["field"] == "name", r.text
    assert (pool / "race.iso").read_bytes() == first
    assert sorted(p.name for p in pool.iterdir()) == ["race.iso"]


def test_an_interrupted_upload_leaves_nothing(live: Live) -> None:
    with RawClient(live) as c:
        c.start("PUT", "/v1/storage/isos/cut.iso", {"content-length": str(10 * 1024 * 1024)})
        c.data(b"x" * (2 * 1024 * 1024))
    pool = live.node.storage.pool_dir
    with httpx.Client(base_url=live.url, verify=_ctx(live), headers=live.auth, timeout=30) as hc:
        # The server notices the disconnect, removes its temporary file and frees the name.
        wait_for(lambda: hc.put("/v1/storage/isos/cut.iso", content=b"whole").status_code == 201, 10,
                 "the name to be free again")
    assert sorted(p.name for p in pool.iterdir()) == ["cut.iso"] and (pool / "cut.iso").read_bytes() == b"whole"


def test_upload_io_does_not_stall_other_requests(live: Live, monkeypatch: pytest.MonkeyPatch) -> None:
    """A disk that stops (a block write, then the fsync, each held until the test lets it go) must hold
    up the upload, not the API: while each is held, GET /v1/vms answers. Were the upload's I/O on the
    event loop, that GET could not be answered before the test releases the I/O, which it does only after
    the answer: the client's timeout would fail the test. No clock is read."""
    real_write, real_sync = storage_mod.write_all, storage_mod.sync
    held = {name: (threading.Event(), threading.Event()) for name in ("write", "sync")}

    def hold(name: str) -> None:
        entered, release = held[name]
        entered.set()
        if not release.wait(60):
            raise OSError(f"the test never released the {name}")

    def held_write(fd: int, data: bytes) -> None:
        hold("write")
        real_write(fd, data)

    def held_sync(fd: int) -> None:
        hold("sync")
        real_sync(fd)

    monkeypatch.setattr(storage_mod, "write_all", held_write)
    monkeypatch.setattr(storage_mod, "sync", held_sync)
    data = os.urandom(6 * storage_mod.WRITE_BLOCK)
    done: dict[str, Any] = {}

    def upload() -> None:
        with httpx.Client(base_url=live.url, verify=_ctx(live), headers=live.auth, timeout=120) as c:
            done["r"] = c.put("/v1/storage/isos/slow.iso", content=data)

    t = threading.Thread(target=upload)
    t.start()
    try:
        with httpx.Client(base_url=live.url, verify=_ctx(live), headers=live.auth, timeout=20) as c:
            for name in ("write", "sync"):
                entered, release = held[name]
                assert entered.wait(60), f"the upload never reached its {name}"
                assert t.is_alive(), "the upload ended while its I/O was held"
                assert c.get("/v1/vms").status_code == 200, f"GET /v1/vms while the upload's {name} is held"
                release.set()
    finally:
        for _, release in held.values():
            release.set()
        t.join(120)
    assert done["r"].status_code == 201, done["r"].text
    assert hashlib.sha256((live.node.storage.pool_dir / "slow.iso").read_bytes()).digest() == \
        hashlib.sha256(data).digest()


def test_health_is_bounded_when_a_check_hangs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from qx_node import health
    from qx_node.api import host

    monkeypatch.setattr(host, "HEALTH_CHECK_TIMEOUT", 0.5)
    release = threading.Event()

    def stuck(*_a: Any) -> Any:
        release.wait(30)
        return health.ComponentHealth("data", True, "late")

    monkeypatch.setattr(health, "check_data", stuck)
    settings = dataclasses.replace(make_settings(tmp_path))
    try:
        with LiveServer(settings) as live, httpx.Client(verify=_ctx(live), timeout=10) as c:
            t = time.monotonic()
            r = c.get(f"{live.url}/health")
            assert time.monotonic() - t < 2.0
            assert r.status_code == 503 and "did not finish within 0.5 s" in r.json()["components"]["data"]["detail"]
    finally:
        release.set()
