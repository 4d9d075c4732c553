#!/usr/bin/env python3
"""Benchmark qx-node beside a bare uvicorn "hello" app (same TLS, same interpreter).

Measures, for each server started as its own process:
* idle CPU% over ``--idle`` seconds (no requests; psutil on the server process) and RSS and PSS after it;
* p50/p99 latency of GET /v1/host and GET /v1/vms (qx-node) and GET / (hello) at ``--rate`` req/s
  for ``--seconds`` seconds on one keep-alive HTTPS connection (paced open loop); GET /v1/vms with the
  test driver's one VM and again with ``--vms`` VMs (the others defined through the API, shut off);
* p50/p99/max of GET /v1/vms at ``--rate`` req/s while a ``--upload-mib`` MiB ISO is uploaded on another
  connection (PUT /v1/storage/isos/...), and the upload's rate.

Usage: .venv/bin/python bench/node.py [--idle 60] [--rate 100] [--seconds 10] [--vms 50] [--upload-mib 200]
       [--libvirt-uri test:///default]
Prints a table and writes bench/results/node-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parent.parent
HELLO = """
import sys, uvicorn
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"hello": "world"}'})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), ssl_keyfile=sys.argv[2], ssl_certfile=sys.argv[3],
            log_level="warning", access_log=False)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(url: str, cert: Path, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            httpx.get(url, verify=_ctx(cert), timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {timeout} s")


def memory(p: psutil.Process) -> dict[str, float]:
    full = p.memory_full_info()
    return {"rss_mb": round(full.rss / 2**20, 1), "pss_mb": round(getattr(full, "pss", 0) / 2**20, 1)}


def idle(proc: subprocess.Popen[bytes], seconds: float) -> dict[str, float]:
    p = psutil.Process(proc.pid)
    t0, c0 = time.monotonic(), p.cpu_times()
    time.sleep(seconds)
    t1, c1 = time.monotonic(), p.cpu_times()
    cpu = max(0.0, (c1.user + c1.system - c0.user - c0.system) / (t1 - t0) * 100)
    return {"idle_cpu_percent": round(cpu, 3), **memory(p)}


def _ctx(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))


def _pct(lat: list[float]) -> dict[str, float]:
    lat = sorted(lat)
    if not lat:
        return {}
    return {"p50_ms": round(lat[len(lat) // 2], 2), "p99_ms": round(lat[max(int(len(lat) * 0.99) - 1, 0)], 2),
            "max_ms": round(lat[-1], 2), "requests": len(lat)}


def latency(url: str, cert: Path, headers: dict[str, str], rate: float, seconds: float,
            until: threading.Event | None = None, samples: list[tuple[float, float]] | None = None) -> dict[str, float]:
    """Paced GETs for ``seconds`` s (or, with ``until``, until it is set); ``samples`` gets
    (monotonic start, ms) of each."""
    lat: list[float] = []
    with httpx.Client(verify=_ctx(cert), headers=headers, timeout=30) as c:
        for _ in range(20):  # warm-up (TLS handshake, first imports)
            c.get(url).raise_for_status()
        start = time.monotonic()
        n = int(rate * seconds)
        i = 0
        while (i < n) if until is None else not until.is_set():
            due = start + i / rate
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            t = time.perf_counter()
            t0 = time.monotonic()
            c.get(url).raise_for_status()
            lat.append((time.perf_counter() - t) * 1000)
            if samples is not None:
                samples.append((t0, lat[-1]))
            i += 1
        achieved = i / (time.monotonic() - start)
    lat.sort()
    return {"p50_ms": round(lat[len(lat) // 2], 2), "p99_ms": round(lat[max(int(len(lat) * 0.99) - 1, 0)], 2),
            "max_ms": round(lat[-1], 2), "requests": i, "achieved_rps": round(achieved, 1)}


def upload_while_listing(base: str, cert: Path, headers: dict[str, str], rate: float, mib: int) -> dict[str, object]:
    """GET /v1/vms at ``rate`` while ``mib`` MiB are PUT as an ISO on another connection."""
    block = os.urandom(1024 * 1024)
    done = threading.Event()
    result: dict[str, object] = {}

    body_sent: list[float] = []

    def body() -> Iterator[bytes]:
        for _ in range(mib):
            yield block
        body_sent.append(time.monotonic())  # the rest until the answer is the server's fsync and link

    def upload() -> None:
        t = time.monotonic()
        try:
            with httpx.Client(verify=_ctx(cert), headers=headers, timeout=300) as c:
                r = c.put(f"{base}/v1/storage/isos/bench.iso", content=body(),
                          headers={"content-length": str(mib * 1024 * 1024)})
                result["upload_status"] = r.status_code
        finally:
            result["upload_s"] = round(time.monotonic() - t, 2)
            result["upload_mib_per_s"] = round(mib / (time.monotonic() - t), 1)
            done.set()

    threading.Thread(target=upload, daemon=True).start()
    samples: list[tuple[float, float]] = []
    lat = latency(f"{base}/v1/vms", cert, headers, rate, 0, until=done, samples=samples)
    # Split by phase: while the body streams (TLS, parsing, writes) and after it (fsync, link, describe).
    if body_sent:
        result["streaming"] = _pct([ms for t, ms in samples if t < body_sent[0]])
        result["after_body"] = _pct([ms for t, ms in samples if t >= body_sent[0]])
    return {**lat, **result}


def define_vms(base: str, cert: Path, headers: dict[str, str], total: int) -> int:
    with httpx.Client(verify=_ctx(cert), headers=headers, timeout=30) as c:
        have = len(c.get(f"{base}/v1/vms").json())
        for i in range(have, total):
            c.post(f"{base}/v1/vms?wait=true", json={"name": f"bench-{i}", "memory_mib": 64,
                                                       "start": False}).raise_for_status()
        return len(c.get(f"{base}/v1/vms").json())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--idle", type=float, default=60.0)
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--vms", type=int, default=50, help="VMs for the second GET /v1/vms run")
    ap.add_argument("--upload-mib", type=int, default=200)
    ap.add_argument("--libvirt-uri", default="test:///default")
    args = ap.parse_args()

    sys.path[:0] = [str(REPO / "services"), str(REPO / "common")]
    from qx_node.tls import ensure_cert

    work = Path(tempfile.mkdtemp(prefix="qx-node-bench-"))
    key, cert = ensure_cert(work / "state" / "tls")
    py = sys.executable
    results: dict[str, dict[str, object]] = {}

    port = free_port()
    node = subprocess.Popen([py, "-m", "qx_node", "serve", "--listen", f"127.0.0.1:{port}",
                             "--libvirt-uri", args.libvirt_uri, "--state-dir", str(work / "state"),
                             "--pool-dir", str(work / "pool"), "--pool-name", "qx-bench", "--no-console-check"],
                            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "services"), str(REPO / "common")])})
    try:
        base = f"https://127.0.0.1:{port}"
        wait_up(f"{base}/health", cert, node)
        token = (work / "state" / "api-token").read_text().strip()
        h = {"Authorization": f"Bearer {token}"}
        r: dict[str, object] = idle(node, args.idle)
        for path in ("/v1/host", "/v1/vms"):
            r[path] = latency(base + path, cert, h, args.rate, args.seconds)
        n = define_vms(base, cert, h, args.vms)
        r[f"/v1/vms ({n} VMs)"] = latency(base + "/v1/vms", cert, h, args.rate, args.seconds)
        r[f"/v1/vms during {args.upload_mib} MiB upload"] = upload_while_listing(base, cert, h, args.rate,
                                                                                 args.upload_mib)
        after = memory(psutil.Process(node.pid))
        r["rss_mb_after_load"], r["pss_mb_after_load"] = after["rss_mb"], after["pss_mb"]
        results["qx-node"] = r
    finally:
        node.terminate()
        node.wait(10)

    port = free_port()
    hello = subprocess.Popen([py, "-c", HELLO, str(port), str(key), str(cert)])
    try:
        base = f"https://127.0.0.1:{port}"
        wait_up(base, cert, hello)
        r = idle(hello, args.idle)
        r["/"] = latency(base + "/", cert, {}, args.rate, args.seconds)
        after = memory(psutil.Process(hello.pid))
        r["rss_mb_after_load"], r["pss_mb_after_load"] = after["rss_mb"], after["pss_mb"]
        results["uvicorn hello"] = r
    finally:
        hello.terminate()
        hello.wait(10)

    print(f"{'server':<15} {'route':<32} {'idle CPU%':>9} {'RSS MB':>7} {'PSS MB':>7} {'p50 ms':>7} "
          f"{'p99 ms':>7} {'max ms':>7} {'req/s':>6}")
    for name, r in results.items():
        for route, v in r.items():
            if isinstance(v, dict):
                print(f"{name:<15} {route:<32} {r['idle_cpu_percent']:>9} {r['rss_mb_after_load']:>7} "
                      f"{r['pss_mb_after_load']:>7} {v['p50_ms']:>7} {v['p99_ms']:>7} {v['max_ms']:>7} "
                      f"{v['achieved_rps']:>6}")
                if "upload_s" in v:
                    note = f"(upload: HTTP {v.get('upload_status')}, {v['upload_s']} s, {v['upload_mib_per_s']} MiB/s)"
                    print(f"{'':<15} {note}")
                    for phase in ("streaming", "after_body"):
                        if v.get(phase):
                            p = v[phase]
                            print(f"{'':<15} {phase + ':':<12} p50 {p['p50_ms']} ms, p99 {p['p99_ms']} ms, "
                                  f"max {p['max_ms']} ms over {p['requests']} requests")
    out = REPO / "bench" / "results" / f"node-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.write_text(json.dumps({"args": vars(args), "cpus": os.cpu_count(), "results": results}, indent=2) + "\n")
    print(f"written {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
