"""The served daemon: TLS with our certificate, SSE events, and the bootcheck markers."""

from __future__ import annotations

import dataclasses
import json
import queue
import threading
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from qx_node import bootcheck
from tests.node.conftest import Live


def test_cert_names_loopback_and_host(live: Live) -> None:
    import socket

    cert = x509.load_pem_x509_certificate(live.cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", socket.gethostname()} <= set(san.get_values_for_type(x509.DNSName))
    assert "127.0.0.1" in {str(i) for i in san.get_values_for_type(x509.IPAddress)}
    assert oct(live.cert.with_name("key.pem").stat().st_mode & 0o777) == "0o600"
    with httpx.Client(verify=str(live.cert)) as c:
        assert c.get(f"{live.url}/v1/host").status_code == 401
        assert c.get(f"{live.url}/v1/host", headers=live.auth).status_code == 200
    with pytest.raises(httpx.ConnectError):  # not trusted without our certificate
        httpx.get(f"{live.url}/health")


def test_sse_streams_lifecycle_events(live: Live) -> None:
    got: queue.Queue[dict] = queue.Queue()
    stop = threading.Event()

    def reader() -> None:
        with httpx.Client(verify=str(live.cert), timeout=30) as c:
            with c.stream("GET", f"{live.url}/v1/events", headers=live.auth) as r:
                assert r.headers["content-type"].startswith("text/event-stream")
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        got.put(json.loads(line[6:]))
                    if stop.is_set():
                        return

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    snap = got.get(timeout=10)
    assert snap["type"] == "snapshot" and {"name": "test", "state": "running"} in snap["vms"]
    with httpx.Client(verify=str(live.cert)) as c:
        r = c.post(f"{live.url}/v1/vms?wait=true", headers=live.auth, json={"name": "ev", "memory_mib": 64})
        assert r.status_code == 201
        c.post(f"{live.url}/v1/vms/ev/stop", headers=live.auth)
        seen = []
        while not any(e.get("vm") == "ev" and e.get("state") == "shutoff" for e in seen):
            seen.append(got.get(timeout=10))
        ev = [e for e in seen if e.get("vm") == "ev"]
        # Coalesced: define+start arrive as one event naming both transitions.
        assert any("defined/0" in e["transitions"] and "started/booted" in e["transitions"] for e in ev), ev
        stop.set()
        c.delete(f"{live.url}/v1/vms/ev", headers=live.auth)


def test_bootcheck_prints_the_markers(live: Live, capsys: pytest.CaptureFixture[str]) -> None:
    assert bootcheck.report(f"{live.url}/health", timeout=10, cafile=live.cert) == 0
    out = capsys.readouterr().out.splitlines()
    healthy = [line for line in out if line.startswith("QUANTIX-NODE-HEALTHY version=")]
    assert len(healthy) == 1
    body = json.loads(healthy[0].split(" health=", 1)[1])
    assert body["status"] == "ok" and set(body["components"]) == {"libvirt", "data", "console"}
    assert all(c["ok"] for c in body["components"].values())
    assert any(line.startswith("QUANTIX-CONSOLE-READY version=") for line in out)


def test_bootcheck_refuses_an_untrusted_certificate(live: Live, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from qx_node.tls import ensure_cert

    _key, other = ensure_cert(tmp_path / "other")
    assert bootcheck.report(f"{live.url}/health", timeout=0.5, cafile=other) == 1
    assert "QUANTIX-NODE-UNHEALTHY" in capsys.readouterr().out


def test_bootcheck_waits_for_every_expected_console(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A real node whose console check reads a ready directory: tty1 is ready at once, ttyS0 only later
    # (the serial console paints after tty1 on a real boot). The marker must name both.
    import os

    from tests.node.conftest import LiveServer, make_settings

    ready = tmp_path / "ready"
    ready.mkdir()
    (ready / "tty1.ready").write_text(json.dumps({"pid": os.getpid()}))
    settings = dataclasses.replace(make_settings(tmp_path), console_ready_dir=ready)
    with LiveServer(settings) as lv:
        timer = threading.Timer(1.5, lambda: (ready / "ttyS0.ready").write_text(json.dumps({"pid": os.getpid()})))
        timer.start()
        try:
            rc = bootcheck.report(f"{lv.url}/health", timeout=10, cafile=lv.cert,
                                  expect_consoles=("tty1", "ttyS0"), console_grace=20, interval=0.2)
        finally:
            timer.cancel()
    out = capsys.readouterr().out
    assert rc == 0
    assert "QUANTIX-CONSOLE-READY version=" in out and "running on tty1, ttyS0\n" in out, out


def test_bootcheck_names_a_console_that_never_came(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import os

    from tests.node.conftest import LiveServer, make_settings

    ready = tmp_path / "ready"
    ready.mkdir()
    (ready / "tty1.ready").write_text(json.dumps({"pid": os.getpid()}))
    settings = dataclasses.replace(make_settings(tmp_path), console_ready_dir=ready)
    with LiveServer(settings) as lv:
        rc = bootcheck.report(f"{lv.url}/health", timeout=10, cafile=lv.cert,
                              expect_consoles=("tty1", "ttyS0"), console_grace=1, interval=0.2)
    out = capsys.readouterr().out
    assert rc == 0  # the node is healthy; the report says which console is missing
    assert "running on tty1 (not ready: ttyS0)" in out, out
