"""``/metadata/…`` as hosts see it, on the real server (the front of :mod:`qx_update_server.serving`,
on uvloop and on asyncio's own loop) and through the ASGI ``MetadataFastPath`` behind it (a query
string): the same status, headers and bytes; conditional GET by ETag; responses in request
order when metadata requests are pipelined behind API requests; HTTP/1.0; and, while the repository is
re-signed over and over by another process, never a torn file nor a timestamp naming a snapshot that
cannot be fetched.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from qx_update_server.repository import LIFETIME, Repository, utcnow

from .conftest import Server, start_server


def _no_uvloop(tmp: Path) -> dict[str, str]:
    """An environment in which importing uvloop fails: the server runs on asyncio's own event loop."""
    shim = tmp / "no-uvloop"
    shim.mkdir(exist_ok=True)
    (shim / "sitecustomize.py").write_text("import sys\nsys.modules['uvloop'] = None\n")
    return {"PYTHONPATH": str(shim)}


@pytest.fixture(params=["uvloop", "asyncio"])
def md_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    env = _no_uvloop(tmp_path) if request.param == "asyncio" else None
    s = start_server(tmp_path / "data", env=env, extra_args=["--refresh-interval", "3600"])
    Repository(s.data_dir).init()
    yield s
    s.stop()


def _get(s: Server, path: str, method: str = "GET", headers: dict[str, str] | None = None
         ) -> tuple[int, dict[str, str], bytes]:
    host, port = s.url.removeprefix("http://").split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    c.request(method, path, headers=headers or {})
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, body


def _raw(s: Server, data: bytes, methods: list[str]) -> bytes:
    """Send ``data`` in one write; read until the responses to ``methods`` arrived (and EOF if closing)."""
    host, port = s.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(data)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
            try:
                _split(out, methods)
            except ValueError:
                continue
            if b"connection: close" not in out.lower():
                break
    return out


def _split(raw: bytes, methods: list[str]) -> list[tuple[int, dict[str, str], bytes]]:
    """The responses to ``methods`` (content-length framed) out of ``raw``; ValueError when incomplete."""
    out = []
    for method in methods:
        head, sep, rest = raw.partition(b"\r\n\r\n")
        if not sep:
            raise ValueError("incomplete")
        lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
        status = int(lines[0].split()[1])
        size = 0 if method == "HEAD" or status == 304 else int(headers.get("content-length", "0"))
        if len(rest) < size:
            raise ValueError("incomplete")
        out.append((status, headers, rest[:size]))
        raw = rest[size:]
    return out


def test_get_head_etag_and_404(md_server: Server) -> None:
    md = md_server.data_dir / "repository/metadata"
    status, h, body = _get(md_server, "/metadata/timestamp.json")
    # the front sends no "server" header (uvicorn adds one to every ASGI response): this is the path tested
    assert "server" not in h
    assert status == 200 and body == (md / "timestamp.json").read_bytes()
    assert h["content-type"] == "application/json" and h["cache-control"] == "no-cache"
    assert h["x-content-type-options"] == "nosniff" and h["content-length"] == str(len(body)) and "date" in h
    etag = h["etag"]
    assert etag.startswith('"') and etag.endswith('"')

    status, h2, body = _get(md_server, "/metadata/timestamp.json", "HEAD")
    assert status == 200 and body == b"" and h2["content-length"] == h["content-length"] and h2["etag"] == etag

    for inm in (etag, f'W/{etag}', f'"nope", {etag}', "*"):
        status, h3, body = _get(md_server, "/metadata/timestamp.json", headers={"If-None-Match": inm})
        assert (status, body, h3["etag"]) == (304, b"", etag), inm
    status, _, body = _get(md_server, "/metadata/timestamp.json", headers={"If-None-Match": '"other"'})
    assert status == 200 and body == (md / "timestamp.json").read_bytes()

    # the ASGI path (a query string is not the raw path's) answers the same
    status, h4, body = _get(md_server, "/metadata/timestamp.json?x=1")
    assert status == 200 and body == (md / "timestamp.json").read_bytes() and h4["etag"] == etag
    assert "server" in h4 and {k: v for k, v in h4.items() if k not in ("server", "date")} == \
        {k: v for k, v in h.items() if k not in ("server", "date")}

    for path in ("/metadata/99.snapshot.json", "/metadata/../server.db", "/metadata/timestamp.json.tmp",
                 "/metadata/%74imestamp.json/", "/metadata/"):
        status, h5, body = _get(md_server, path)
        assert status == 404, path
        err = json.loads(body)
        assert set(err) == {"error", "field", "hint"} and err["hint"], path

    # a new version: new bytes, new ETag; the old ETag no longer matches
    Repository(md_server.data_dir).refresh(now=utcnow() + LIFETIME["targets"])
    status, h6, body = _get(md_server, "/metadata/timestamp.json", headers={"If-None-Match": etag})
    assert status == 200 and body == (md / "timestamp.json").read_bytes() and h6["etag"] != etag


def test_pipelined_requests_answered_in_order(md_server: Server) -> None:
    """API requests (ASGI, behind the front) and metadata requests (the front's) in one write: answers in
    request order."""
    md = md_server.data_dir / "repository/metadata"
    reqs = (b"GET /metadata/timestamp.json HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /v1/releases HTTP/1.1\r\nHost: x\r\n\r\n"  # no token: 401 from the app
            b"GET /metadata/1.root.json HTTP/1.1\r\nHost: x\r\n\r\n"
            b"HEAD /metadata/timestamp.json HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /metadata/timestamp.json HTTP/1.1\r\nHost: x\r\n\r\n")
    methods = ["GET", "GET", "GET", "HEAD", "GET", "GET"]
    out = _split(_raw(md_server, reqs, methods), methods)
    assert [r[0] for r in out] == [200, 401, 200, 200, 200, 200]
    assert out[0][2] == out[5][2] == (md / "timestamp.json").read_bytes()
    assert out[2][2] == (md / "1.root.json").read_bytes()
    assert out[3][2] == b"" and out[3][1]["content-length"] == str(len(out[0][2]))
    assert json.loads(out[1][2])["hint"]


def test_http10_and_connection_close(md_server: Server) -> None:
    for req in (b"GET /metadata/timestamp.json HTTP/1.0\r\n\r\n",
                b"GET /metadata/timestamp.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"):
        out = _raw(md_server, req, ["GET"])  # returns when the server closes (a 10 s timeout fails the test)
        (status, headers, body), = _split(out, ["GET"])
        assert status == 200 and body == (md_server.data_dir / "repository/metadata/timestamp.json").read_bytes()
        assert out.endswith(body)


def test_no_torn_or_dangling_metadata_while_resigning(md_server: Server) -> None:
    """Another process re-signs every role as fast as it can; two clients poll as hosts do. Every
    timestamp is whole and signed, never older than one seen before, and the snapshot and targets it
    leads to are there and are the versions it names."""
    stop = threading.Event()
    errors: list[str] = []
    signed = [0]

    def resign() -> None:
        repo = Repository(md_server.data_dir)
        while not stop.is_set():
            repo.refresh(now=utcnow() + LIFETIME["targets"] + dt.timedelta(minutes=signed[0]))
            signed[0] += 1

    def poll() -> None:
        seen = 0
        host, port = md_server.url.removeprefix("http://").split(":")
        c = http.client.HTTPConnection(host, int(port), timeout=10)
        for _ in range(300):
            c.request("GET", "/metadata/timestamp.json")
            r = c.getresponse()
            ts = json.loads(r.read())  # a torn file fails here
            v = ts["signed"]["version"]
            if v < seen or len(ts["signatures"]) != 1:
                errors.append(f"timestamp {v} after {seen}")
            seen = v
            snap_v = ts["signed"]["meta"]["snapshot.json"]["version"]
            c.request("GET", f"/metadata/{snap_v}.snapshot.json")
            r = c.getresponse()
            body = r.read()
            if r.status != 200:
                errors.append(f"timestamp {v} names snapshot {snap_v}: {r.status}")
                continue
            snap = json.loads(body)
            tv = snap["signed"]["meta"]["targets.json"]["version"]
            c.request("GET", f"/metadata/{tv}.targets.json")
            r = c.getresponse()
            targets = json.loads(r.read())
            if snap["signed"]["version"] != snap_v or r.status != 200 or targets["signed"]["version"] != tv:
                errors.append(f"snapshot {snap_v} / targets {tv} do not match what names them")
        c.close()

    writer = threading.Thread(target=resign)
    writer.start()
    try:
        readers = [threading.Thread(target=poll) for _ in range(2)]
        for t in readers:
            t.start()
        for t in readers:
            t.join()
    finally:
        stop.set()
        writer.join()
    assert not errors, errors[:5]
    assert signed[0] >= 3  # the reads really raced new versions


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_pipelined_flood_without_reading_stays_bounded(md_server: Server) -> None:
    """400,000 pipelined metadata GETs (~20 MB sent, ~500 MB of answers) from a client that never reads: the
    server stops reading (or drops the connection) instead of buffering every answer, and still answers
    other hosts. (The front writes answers only while the client's transport takes them and stops reading
    while more than one request is queued; the header limit ends a connection whose read chunk ends in a
    request's headers.)"""
    host, port = md_server.url.removeprefix("http://").split(":")
    before = _rss_kib(md_server.proc.pid)
    req = b"GET /metadata/timestamp.json HTTP/1.1\r\nHost: x\r\n\r\n"
    flood = socket.create_connection((host, int(port)), timeout=10)
    flood.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    flood.settimeout(5)
    sent = 0
    try:
        for _ in range(400):
            flood.sendall(req * 1000)
            sent += 1000
    except (TimeoutError, ConnectionResetError, BrokenPipeError):
        pass  # the server stopped reading, or dropped the connection: either bounds what it holds
    try:
        assert _get(md_server, "/metadata/timestamp.json")[0] == 200
        grown = _rss_kib(md_server.proc.pid) - before
        assert grown < 40 * 1024, f"server grew by {grown} KiB with {sent} requests unread"
    finally:
        flood.close()
