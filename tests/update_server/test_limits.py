"""No single request, and no crowd of idle connections, stops /metadata/ from answering.

Each test runs an attack against the real server (uvicorn subprocess on 127.0.0.1) — bounded in count
and time — and meanwhile fetches ``/metadata/timestamp.json`` as a host would, expecting every fetch to
be answered (a generous client timeout only turns a hang into a failure; speed is measured in
bench/update_server.py). Attacks: a 300 MiB JSON body with a valid token, idle/half-open connections
beyond the connection cap, headers sent one byte at a time, and a 20,000-host fleet listed page by page.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import requests

from qx_update_server.storage import SQLiteStorage

from .conftest import Server, start_server


def rss_kib(server: Server) -> int:
    for line in open(f"/proc/{server.proc.pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def poll_metadata(server: Server, stop: threading.Event, results: list[int]) -> None:
    """What a host does, in a loop: fetch timestamp.json on a fresh connection."""
    while not stop.is_set():
        r = requests.get(server.url + "/metadata/timestamp.json", timeout=10)
        results.append(r.status_code)


def during(server: Server, attack: Callable[[], None], *, min_polls: int = 5) -> list[int]:
    """Run ``attack`` while polling metadata; return the status codes the polls got (all must be 200)."""
    stop = threading.Event()
    results: list[int] = []
    errors: list[BaseException] = []

    def poller() -> None:
        try:
            poll_metadata(server, stop, results)
        except BaseException as e:  # noqa: BLE001 - reported in the main thread
            errors.append(e)

    t = threading.Thread(target=poller)
    t.start()
    try:
        attack()
        deadline = time.monotonic() + 30
        while len(results) < min_polls and not errors and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        t.join()
    assert not errors, errors
    assert len(results) >= min_polls and set(results) == {200}
    return results


@pytest.fixture(params=["uvloop", "asyncio"])
def limited(request, tmp_path) -> Iterator[Server]:
    """A server with small limits, on each event loop the front runs on: uvloop (the "server" extra,
    installed here) and asyncio's own (an installation without uvloop: importing it fails in the server
    process)."""
    env = None
    if request.param == "asyncio":
        shim = tmp_path / "no-uvloop"
        shim.mkdir()
        (shim / "sitecustomize.py").write_text("import sys\nsys.modules['uvloop'] = None\n")
        env = {"PYTHONPATH": str(shim)}
    s = start_server(tmp_path / "data", env=env, extra_args=["--max-connections", "64", "--header-timeout", "2",
                                                              "--idle-timeout", "2", "--refresh-interval", "3600"])
    s.token("keys")  # makes the database
    requests.post(s.url + "/v1/keys/init", json={},
                  headers={"Authorization": f"Bearer {s.token('keys')}"}, timeout=10).raise_for_status()
    yield s
    s.stop()


def _raw(server: Server) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _answer(sock: socket.socket) -> bytes:
    """One HTTP response (headers and a Content-Length body) read from ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def test_huge_json_body_is_refused_unread(limited):
    """A 300 MiB check-in (valid token) gets 413 from its headers alone; the body is never read."""
    token = limited.token("checkin", "read")
    before = rss_kib(limited)
    answers: list[bytes] = []

    def attack() -> None:
        for path in ("/v1/checkin", "/v1/keys/init", "/v1/uploads/x/publish"):
            s = _raw(limited)
            s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                      f"Content-Type: application/json\r\nContent-Length: {300 << 20}\r\n\r\n".encode()
                      + b"[" * (1 << 20))
            answers.append(_answer(s))
            s.close()

    during(limited, attack)
    # the check-in: 413 (too large); keys/init and publish: 403 (the scope is checked first)
    assert answers[0].startswith(b"HTTP/1.1 413") and b"over the limit of 65536" in answers[0]
    assert answers[1].startswith(b"HTTP/1.1 403") and answers[2].startswith(b"HTTP/1.1 403")
    assert rss_kib(limited) - before < 64 << 10  # not 300 MiB (nor 1 GB of parsed JSON)
    # chunked bodies (no length to check up front) are refused on the JSON routes
    r = requests.post(limited.url + "/v1/checkin", data=iter([b"{}"]), timeout=10,
                      headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    assert r.status_code == 411
    # no token: 401 before anything else
    s = _raw(limited)
    s.sendall(f"POST /v1/checkin HTTP/1.1\r\nHost: x\r\nContent-Length: {300 << 20}\r\n\r\n".encode())
    assert _answer(s).startswith(b"HTTP/1.1 401")
    s.close()


def test_idle_connections_beyond_the_cap(limited):
    """500 connections that never send a request (cap 64): the oldest are closed, metadata still answers."""
    socks: list[socket.socket] = []

    def attack() -> None:
        for i in range(500):
            s = _raw(limited)
            if i % 2:
                s.sendall(b"GET /metadata/timestamp.json HTTP/1.1\r\nHost: x\r\n")  # headers never finished
            socks.append(s)

    try:
        during(limited, attack)
        # the server closed most of them (cap, then the header timeout): poll until it has closed them all
        deadline = time.monotonic() + 30
        open_ones = list(socks)
        while open_ones and time.monotonic() < deadline:
            still = []
            for s in open_ones:
                s.settimeout(0.01)
                try:
                    if s.recv(1) != b"":
                        still.append(s)
                except TimeoutError:
                    still.append(s)
                except OSError:
                    pass
            open_ones = still
        assert open_ones == []
    finally:
        for s in socks:
            s.close()


def test_slow_headers_are_cut(limited):
    """Headers dripped one byte at a time never complete within --header-timeout: the connection closes."""
    s = _raw(limited)
    request = b"GET /metadata/timestamp.json HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 400
    closed = False
    deadline = time.monotonic() + 30
    s.settimeout(0.1)
    i = 0
    while time.monotonic() < deadline and not closed:
        try:
            s.send(request[i % len(request):i % len(request) + 1])
            i += 1
            if s.recv(1) == b"":
                closed = True
        except TimeoutError:
            continue
        except OSError:
            closed = True
    s.close()
    assert closed and i < len(request)  # cut before the headers could ever be complete


def test_oversized_headers_are_cut_at_once(limited):
    """Headers past MAX_HEADER_BYTES close the connection when they arrive, long before the header timeout
    (the C parser has no size limit of its own)."""
    from qx_update_server.serving import MAX_HEADER_BYTES

    s = _raw(limited)
    t0 = time.monotonic()
    s.sendall(b"GET /metadata/timestamp.json HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * (MAX_HEADER_BYTES + 4096))
    s.settimeout(30)
    try:
        got = s.recv(65536)
    except ConnectionResetError:
        got = b""
    s.close()
    assert got == b"" or got.startswith(b"HTTP/1.1 4"), got[:100]
    assert time.monotonic() - t0 < 1.5  # the header timeout is 2 s


def test_body_idle_timeout(limited):
    """A request body that stops arriving does not hold the connection forever."""
    token = limited.token("checkin")
    s = _raw(limited)
    s.sendall(f"POST /v1/checkin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
              f"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{".encode())
    s.settimeout(30)
    got = s.recv(65536)  # the server ends it: a 4xx answer, or the connection simply closed
    assert got == b"" or got.startswith(b"HTTP/1.1 4")
    s.close()


def test_fleet_of_20000_is_paged(tmp_path):
    data = tmp_path / "data"
    db = SQLiteStorage((data.mkdir(parents=True), data / "server.db")[1])
    for i in range(20000):
        db.checkin({"host_id": f"host-{i:05d}", "version": "1.0.0", "slot": "a", "channel": "stable",
                    "health": "good" if i % 10 else "bad", "last_error": None})
    db.close()
    s = start_server(data, extra_args=["--refresh-interval", "3600"])
    try:
        requests.post(s.url + "/v1/keys/init", json={}, timeout=10,
                      headers={"Authorization": f"Bearer {s.token('keys')}"}).raise_for_status()
        h = {"Authorization": f"Bearer {s.token('read')}"}
        seen: list[str] = []

        def attack() -> None:
            page = requests.get(s.url + "/v1/fleet?limit=2000", headers=h, timeout=30).json()
            assert page["summary"] == {"total": 20000, "health": {"good": 18000, "bad": 2000},
                                       "versions": {"1.0.0": 20000}}
            seen.extend(x["host_id"] for x in page["hosts"])
            while page["next"]:
                page = requests.get(s.url + "/v1/fleet", params={"limit": 2000, "after": page["next"]},
                                    headers=h, timeout=30).json()
                assert "summary" not in page
                seen.extend(x["host_id"] for x in page["hosts"])

        during(s, attack)
        assert len(seen) == 20000 and seen == sorted(set(seen))
        default = requests.get(s.url + "/v1/fleet", headers=h, timeout=30).json()
        assert len(default["hosts"]) == 500 and default["next"] == "host-00499"
        r = requests.get(s.url + "/v1/fleet?limit=100000", headers=h, timeout=30)
        assert r.status_code == 400 and "limit" in r.json()["error"]
    finally:
        s.stop()


def test_listening_socket_is_tcp_so_nagle_is_off():
    """asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP; without it every response on a
    kept-alive connection waited ~40 ms for a delayed ACK (43 req/s instead of ~1,000 in the bench)."""
    from qx_update_server import serving

    from .conftest import free_port

    sock = serving.bind("127.0.0.1", free_port())
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()


def test_silent_connections_stay_in_the_kernel(tmp_path):
    """Connections that send nothing are not handed to the server (TCP_DEFER_ACCEPT): 300 of them hold no
    descriptor in the server process while metadata answers; one byte sent, and the server has them."""
    # a long header timeout: the kernel holds a silent connection about that long (TCP_DEFER_ACCEPT)
    s = start_server(tmp_path / "data", extra_args=["--header-timeout", "120", "--refresh-interval", "3600"])

    def fds() -> int:
        return len(os.listdir(f"/proc/{s.proc.pid}/fd"))

    socks: list[socket.socket] = []
    try:
        before = fds()
        socks = [_raw(s) for _ in range(300)]
        for _ in range(5):  # the server's loop has turned (and accepted whatever it was given)
            assert requests.get(s.url + "/metadata/timestamp.json", timeout=10).status_code == 404  # no repo yet
        assert fds() - before < 30, f"{fds() - before} descriptors for 300 silent connections"
        for sock in socks[:50]:
            sock.sendall(b"G")
        deadline = time.monotonic() + 30
        # (45: ``before`` may hold start_server's kept-alive health check, closed since)
        while fds() - before < 45 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fds() - before >= 45
    finally:
        for sock in socks:
            sock.close()
        s.stop()
