#!/usr/bin/env python3
"""Benchmark qx-node beside a bare uvicorn "hello" app (same TLS, same interpreter).

Measures, for each server started as its own process:
* idle CPU% over ``--idle`` seconds (no requests; psutil on the server process) and RSS after it;
* p50/p99 latency of GET /v1/host and GET /v1/vms (qx-node) and GET / (hello) at ``--rate`` req/s
  for ``--seconds`` seconds on one keep-alive HTTPS connection (paced open loop).

Usage: .venv/bin/python bench/node.py [--idle 60] [--rate 100] [--seconds 10] [--libvirt-uri test:///default]
Prints a table and writes bench/results/node-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
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
            httpx.get(url, verify=str(cert), timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {timeout} s")


def idle(proc: subprocess.Popen[bytes], seconds: float) -> dict[str, float]:
    p = psutil.Process(proc.pid)
    t0, c0 = time.monotonic(), p.cpu_times()
    time.sleep(seconds)
    t1, c1 = time.monotonic(), p.cpu_times()
    cpu = max(0.0, (c1.user + c1.system - c0.user - c0.system) / (t1 - t0) * 100)
    return {"idle_cpu_percent": round(cpu, 3), "rss_mb": round(p.memory_info().rss / 2**20, 1)}


def latency(url: str, cert: Path, headers: dict[str, str], rate: float, seconds: float) -> dict[str, float]:
    lat: list[float] = []
    with httpx.Client(verify=str(cert), headers=headers, timeout=10) as c:
        for _ in range(20):  # warm-up (TLS handshake, first imports)
            c.get(url).raise_for_status()
        start = time.monotonic()
        n = int(rate * seconds)
        for i in range(n):
            due = start + i / rate
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            t = time.perf_counter()
            c.get(url).raise_for_status()
            lat.append((time.perf_counter() - t) * 1000)
        achieved = n / (time.monotonic() - start)
    lat.sort()
    return {"p50_ms": round(lat[len(lat) // 2], 2), "p99_ms": round(lat[int(len(lat) * 0.99) - 1], 2),
            "requests": n, "achieved_rps": round(achieved, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--idle", type=float, default=60.0)
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--libvirt-uri", default="test:///default")
    args = ap.parse_args()

    sys.path[:0] = [str(REPO / "services")]
    from qx_node.tls import ensure_cert

    work = Path(tempfile.mkdtemp(prefix="qx-node-bench-"))
    key, cert = ensure_cert(work / "state" / "tls")
    py = sys.executable
    results: dict[str, dict[str, object]] = {}

    port = free_port()
    node = subprocess.Popen([py, "-m", "qx_node", "serve", "--listen", f"127.0.0.1:{port}",
                             "--libvirt-uri", args.libvirt_uri, "--state-dir", str(work / "state"),
                             "--pool-dir", str(work / "pool"), "--pool-name", "qx-bench", "--no-console-check"],
                            env={**os.environ, "PYTHONPATH": str(REPO / "services")})
    try:
        base = f"https://127.0.0.1:{port}"
        wait_up(f"{base}/health", cert, node)
        token = (work / "state" / "api-token").read_text().strip()
        h = {"Authorization": f"Bearer {token}"}
        r: dict[str, object] = idle(node, args.idle)
        for path in ("/v1/host", "/v1/vms"):
            r[path] = latency(base + path, cert, h, args.rate, args.seconds)
        r["rss_mb_after_load"] = round(psutil.Process(node.pid).memory_info().rss / 2**20, 1)
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
        r["rss_mb_after_load"] = round(psutil.Process(hello.pid).memory_info().rss / 2**20, 1)
        results["uvicorn hello"] = r
    finally:
        hello.terminate()
        hello.wait(10)

    print(f"{'server':<15} {'route':<10} {'idle CPU%':>9} {'RSS MB':>7} {'p50 ms':>7} {'p99 ms':>7} {'req/s':>6}")
    for name, r in results.items():
        for route, v in r.items():
            if isinstance(v, dict):
                print(f"{name:<15} {route:<10} {r['idle_cpu_percent']:>9} {r['rss_mb_after_load']:>7} "
                      f"{v['p50_ms']:>7} {v['p99_ms']:>7} {v['achieved_rps']:>6}")
    out = REPO / "bench" / "results" / f"node-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.write_text(json.dumps({"args": vars(args), "cpus": os.cpu_count(), "results": results}, indent=2) + "\n")
    print(f"written {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
