"""The HTTP front of :mod:`qx_update_server.serving` (ours, on httptools' public parser API) in front of
uvicorn: what it forwards arrives whole (chunked bodies re-framed, 100-continue passed through), what it
cannot take is refused in the server's error shape, an Upgrade is answered as plain HTTP/1.1, a kept-alive
connection that sends nothing more is closed, and the backend's private socket directory goes with the
server. Real server processes on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Server, start_server


@pytest.fixture
def front(tmp_path: Path) -> Iterator[Server]:
    s = start_server(tmp_path / "data", extra_args=["--refresh-interval", "3600"])
    yield s
    s.stop()


def _connect(s: Server) -> socket.socket:
    host, port = s.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    return sock


def _read_response(sock: socket.socket, buf: bytes = b"") -> tuple[int, dict[str, str], bytes, bytes]:
    """One response (content-length or chunked body) from ``sock``; returns status, headers, body, leftover."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed mid-response: {buf!r}"
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    status = int(lines[0].split()[1])
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            while b"\r\n" not in rest:
                rest += sock.recv(65536)
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            while len(rest) < size + 2:
                rest += sock.recv(65536)
            body, rest = body + rest[:size], rest[size + 2:]
            if size == 0:
                return status, headers, body, rest
    size = int(headers.get("content-length", "0"))
    while len(rest) < size:
        chunk = sock.recv(65536)
        assert chunk
        rest += chunk
    return status, headers, rest[:size], rest[size:]


def _checkin(host_id: str) -> bytes:
    return json.dumps({"host_id": host_id, "version": "0.1.0", "slot": "a", "channel": "stable",
                       "health": "good"}).encode()


def test_chunked_body_is_forwarded_whole(front: Server) -> None:
    """A chunked upload reaches the app as the same bytes (the front re-frames the chunks it parsed);
    a Content-Length request on the same kept-alive connection after it is answered too."""
    token = front.token("publish", "checkin")
    data = os.urandom(60_000)  # SHA256SUMS: under its 64 KiB limit
    with _connect(front) as s:
        s.sendall(f"POST /v1/uploads HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                  "Content-Length: 0\r\n\r\n".encode())
        status, _, answer, rest = _read_response(s)
        assert status == 200, answer
        upload = json.loads(answer)["upload_id"]
        s.sendall(f"PUT /v1/uploads/{upload}/SHA256SUMS HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                  "Transfer-Encoding: chunked\r\n\r\n".encode())
        for i in range(0, len(data), 7_000):  # uneven chunks, each its own write
            piece = data[i:i + 7_000]
            s.sendall(b"%x\r\n%b\r\n" % (len(piece), piece))
        s.sendall(b"0\r\n\r\n")
        status, _, answer, rest = _read_response(s, rest)
        assert status == 200 and json.loads(answer)["size"] == len(data), answer
        assert (front.data_dir / "staging" / upload / "SHA256SUMS").read_bytes() == data
        body = _checkin("after-chunked")
        s.sendall(f"POST /v1/checkin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                  f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        status, _, answer, _ = _read_response(s, rest)
        assert status == 204, answer  # a check-in has no answer body


def test_expect_100_continue_passes_through(front: Server) -> None:
    token = front.token("checkin")
    body = _checkin("expect-1")
    with _connect(front) as s:
        s.sendall(f"POST /v1/checkin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                  f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                  f"Expect: 100-continue\r\n\r\n".encode())
        interim = b""
        while b"\r\n\r\n" not in interim:
            interim += s.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 "), interim
        _, _, rest = interim.partition(b"\r\n\r\n")
        s.sendall(body)
        status, _, answer, _ = _read_response(s, rest)
        assert status == 204, answer  # a check-in has no answer body


def test_upgrade_is_answered_as_plain_http(front: Server) -> None:
    """An h2c upgrade (curl --http2 on http://) and the request after it on the same connection."""
    with _connect(front) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                  b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
                  b"GET /metadata/root.json HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, _, rest = _read_response(s)
        assert status == 200 and "upgrade" not in headers
        status, _, body, _ = _read_response(s, rest)
        assert status == 404 and json.loads(body)["hint"]  # no repository yet: the front's own 404


def test_not_http_is_refused_in_the_error_shape(front: Server) -> None:
    with _connect(front) as s:
        s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 TLS to a plain port\r\n\r\n")
        status, headers, body, _ = _read_response(s)
        assert status == 400 and headers["connection"] == "close"
        assert set(json.loads(body)) == {"error", "field", "hint"}
        assert s.recv(65536) == b""  # and the connection is closed


def test_idle_kept_alive_connection_is_closed(front: Server) -> None:
    """After a response, a connection that sends nothing more is closed (the keep-alive wait)."""
    with _connect(front) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, _, rest = _read_response(s)
        assert status == 200 and rest == b""
        assert s.recv(65536) == b""  # closed by the server (the socket's 30 s timeout would fail the test)


def test_backend_socket_directory_is_private_and_removed(tmp_path: Path) -> None:
    """The Unix sockets uvicorn listens on behind the front are in a 0700 directory of the server's own,
    gone when the server stops (SIGTERM), and removed by the next start when the server was killed."""
    tmp = Path(tempfile.mkdtemp(prefix="qxus-", dir="/tmp"))  # short: a socket path has at most 107 bytes
    try:
        s = start_server(tmp_path / "data", env={"TMPDIR": str(tmp)}, extra_args=["--refresh-interval", "3600"])
        try:
            dirs = list(tmp.iterdir())
            assert len(dirs) == 1 and stat.S_IMODE(dirs[0].stat().st_mode) == 0o700
            assert [p.name for p in dirs[0].iterdir()] == ["listener-0.sock"]
            assert stat.S_ISSOCK(os.stat(dirs[0] / "listener-0.sock").st_mode)
        finally:
            s.stop()
        assert list(tmp.iterdir()) == []
        # a server killed outright leaves its directory; the next start removes it
        killed = start_server(tmp_path / "data", env={"TMPDIR": str(tmp)}, extra_args=["--refresh-interval", "3600"])
        killed.proc.kill()
        killed.proc.wait()
        left = list(tmp.iterdir())
        assert len(left) == 1
        s = start_server(tmp_path / "data", env={"TMPDIR": str(tmp)}, extra_args=["--refresh-interval", "3600"])
        try:
            now = list(tmp.iterdir())
            assert len(now) == 1 and now != left
        finally:
            s.stop()
    finally:
        for p in tmp.glob("*/*"):
            p.unlink()
        for p in tmp.glob("*"):
            p.rmdir()
        tmp.rmdir()


def test_backend_connections_reused_without_mixing_answers(front: Server) -> None:
    """API requests from three client connections, round robin, HTTP/1.1 and HTTP/1.0 (whose backend
    connection ends with it), with HEAD and a body-less 401 among them: every client gets the answer to its
    own request — a kept backend connection is reused only whole and only for one request at a time."""
    token = front.token("checkin", "read")
    for i in range(6):  # hosts to list, so the pages below differ by their limit
        body = _checkin(f"pool-{i}")
        with _connect(front) as s:
            s.sendall(f"POST /v1/checkin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                      f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                      + body)
            assert _read_response(s)[0] == 204
    clients = [_connect(front) for _ in range(3)]
    rests = [b"", b"", b""]
    try:
        for n in range(1, 31):
            i = n % 3
            limit = n % 6 + 1
            if n % 7 == 0:  # HTTP/1.0 on its own connection: the backend connection ends with it
                with _connect(front) as s:
                    s.sendall(f"GET /v1/fleet?limit={limit} HTTP/1.0\r\nAuthorization: Bearer {token}\r\n\r\n"
                              .encode())
                    status, _, body, _ = _read_response(s)
                assert status == 200 and len(json.loads(body)["hosts"]) == limit, n
                continue
            if n % 5 == 0:
                # the app's HEAD answer (a query string: not the front's): a length, no body
                clients[i].sendall(b"HEAD /metadata/timestamp.json?x=1 HTTP/1.1\r\nHost: x\r\n\r\n")
                raw = rests[i]
                while b"\r\n\r\n" not in raw:
                    raw += clients[i].recv(65536)
                head, _, rests[i] = raw.partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 404") and b"content-length" in head.lower(), n
                continue
            if n % 4 == 0:
                clients[i].sendall(b"GET /v1/fleet HTTP/1.1\r\nHost: x\r\n\r\n")  # no token
                status, _, body, rests[i] = _read_response(clients[i], rests[i])
                assert status == 401 and json.loads(body)["hint"], n
                continue
            clients[i].sendall(f"GET /v1/fleet?limit={limit} HTTP/1.1\r\nHost: x\r\n"
                               f"Authorization: Bearer {token}\r\n\r\n".encode())
            status, _, body, rests[i] = _read_response(clients[i], rests[i])
            assert status == 200 and len(json.loads(body)["hosts"]) == limit, n
    finally:
        for s in clients:
            s.close()
