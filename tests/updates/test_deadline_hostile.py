"""The per-download deadline against hostile servers on 127.0.0.1 that the body-trickle test does not cover.

* a server that trickles its *status line and headers* (one byte at a time, never a read-gap timeout):
  the deadline must hold before there is a response object to shut down;
* a socket that listens but never accepts (the kernel completes the handshake, nothing answers);
* a download stopped by the deadline is resumed from its ``.part`` by the next run against an honest
  server, and verified.

Artifacts go through :func:`qx_update.download.fetch`; metadata through qx-update's repository client
(ngclient with :class:`qx_update.deadline.DeadlineFetcher`).
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tuf.api.metadata import TargetFile

from qx_common.errors import ExternalError, UserError
from qx_update import config, download
from qx_update.repo import open_repo

from .tufrepo import TufRepo

BODY = bytes(range(256)) * 64  # 16 KiB


class RawServer:
    """A TCP server on 127.0.0.1; ``handle(conn, request_bytes)`` answers each connection in a thread."""

    def __init__(self, handle: Callable[[socket.socket, bytes], None]) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.stop = threading.Event()
        self.requests: list[bytes] = []

        def serve() -> None:
            while not self.stop.is_set():
                try:
                    conn, _ = self.sock.accept()
                except OSError:
                    return
                threading.Thread(target=self._one, args=(conn, handle), daemon=True).start()
        threading.Thread(target=serve, daemon=True).start()

    def _one(self, conn: socket.socket, handle: Callable[[socket.socket, bytes], None]) -> None:
        with conn:
            req = b""
            while b"\r\n\r\n" not in req:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                req += chunk
            self.requests.append(req)
            try:
                handle(conn, req)
            except OSError:
                pass  # the client hung up: what the deadline is for

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.fixture
def servers() -> Iterator[list[RawServer]]:
    out: list[RawServer] = []
    yield out
    for s in out:
        s.close()


def _trickle_headers(stop: threading.Event) -> Callable[[socket.socket, bytes], None]:
    def handle(conn: socket.socket, req: bytes) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nX-Pad: ")
        for _ in range(600):  # 3 minutes at most, far past any deadline here
            if stop.is_set():
                return
            conn.sendall(b"a")
            time.sleep(0.3)
    return handle


def _honest(conn: socket.socket, req: bytes) -> None:
    """200 or, for ``Range: bytes=N-``, 206 with the rest."""
    start = 0
    for line in req.decode("latin-1").split("\r\n"):
        if line.lower().startswith("range: bytes="):
            start = int(line.split("=", 1)[1].rstrip("-"))
    head = (f"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{len(BODY) - 1}/{len(BODY)}\r\n"
            if start else "HTTP/1.1 200 OK\r\n")
    conn.sendall(f"{head}Content-Length: {len(BODY) - start}\r\nConnection: close\r\n\r\n".encode() + BODY[start:])


def _trickle_body(conn: socket.socket, req: bytes) -> None:
    conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {len(BODY)}\r\n\r\n".encode())
    for i in range(len(BODY)):
        conn.sendall(BODY[i:i + 1])
        time.sleep(0.05)


def _info() -> TargetFile:
    return TargetFile(length=len(BODY), hashes={"sha256": hashlib.sha256(BODY).hexdigest()}, path="1.0/x.bin")


def _fetch_fails_in_time(url: str, dest: Path) -> ExternalError:
    t0 = time.monotonic()
    with pytest.raises(ExternalError) as e:
        download.fetch(_info(), f"{url}/x.bin", dest, label="x", progress=False, deadline=2)
    took = time.monotonic() - t0
    assert took < 8, f"the deadline of 2 s let the download run {took:.1f} s"
    assert "download deadline of 2 s" in e.value.message and "download_deadline" in (e.value.hint or "")
    return e.value


def test_trickled_headers_fail_at_the_deadline(tmp_path: Path, servers: list[RawServer]) -> None:
    stop = threading.Event()
    servers.append(RawServer(_trickle_headers(stop)))
    try:
        _fetch_fails_in_time(servers[0].url, tmp_path / "dl")
    finally:
        stop.set()
    assert len(servers[0].requests) == 1
    assert not list((tmp_path / "dl").glob("*.x.bin"))  # nothing verified, nothing renamed into place


def test_a_socket_that_never_accepts_fails_at_the_deadline(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0), backlog=4) as sock:  # listening, never accept()ed
        _fetch_fails_in_time(f"http://127.0.0.1:{sock.getsockname()[1]}", tmp_path / "dl")


def test_a_download_stopped_by_the_deadline_resumes_and_verifies(tmp_path: Path,
                                                                  servers: list[RawServer]) -> None:
    servers.append(RawServer(_trickle_body))
    _fetch_fails_in_time(servers[0].url, tmp_path / "dl")
    parts = list((tmp_path / "dl").glob("*.part"))
    assert len(parts) == 1 and 0 < (kept := parts[0].stat().st_size) < len(BODY)
    servers.append(RawServer(_honest))
    done = download.fetch(_info(), f"{servers[1].url}/x.bin", tmp_path / "dl", label="x", progress=False,
                          deadline=2)
    assert done.read_bytes() == BODY and not parts[0].exists()
    assert f"range: bytes={kept}-".encode() in servers[1].requests[0].lower()


def test_trickled_metadata_headers_fail_at_the_deadline(tmp_path: Path, repo: TufRepo,
                                                        servers: list[RawServer]) -> None:
    stop = threading.Event()
    servers.append(RawServer(_trickle_headers(stop)))
    root = tmp_path / "root.json"
    root.write_bytes(repo.root_bytes)
    rp = open_repo(trusted_root=root, metadata_dir=tmp_path / "md", base_url=servers[0].url, download_deadline=2)
    t0 = time.monotonic()
    try:
        with pytest.raises(ExternalError) as e:
            rp.refresh()
    finally:
        stop.set()
    assert time.monotonic() - t0 < 8
    assert "download deadline of 2 s" in e.value.message


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e9", "0.5", "[60]", "{ s = 60 }"])
def test_download_deadline_values_toml_allows_are_refused_by_name(tmp_path: Path, value: str) -> None:
    f = tmp_path / "update.toml"
    f.write_text(f"download_deadline = {value}\n")
    with pytest.raises(UserError) as e:
        config.load(f)
    assert "download_deadline" in e.value.message and "from 1 to 86400" in (e.value.hint or "")


def test_headers_then_silence_fails_at_the_deadline(tmp_path: Path, servers: list[RawServer]) -> None:
    stop = threading.Event()

    def handle(conn: socket.socket, req: bytes) -> None:
        conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {len(BODY)}\r\n\r\n".encode() + BODY[:100])
        stop.wait(120)  # then nothing, the connection kept open

    servers.append(RawServer(handle))
    try:
        _fetch_fails_in_time(servers[0].url, tmp_path / "dl")
    finally:
        stop.set()
    assert [p.stat().st_size for p in (tmp_path / "dl").glob("*.part")] == [100]  # kept for a resume
