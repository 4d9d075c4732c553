"""qx-update-server beside nginx serving the same repository directory, in the same run.

    .venv/bin/python bench/update_server.py [--requests 4000] [--clients 2] [--publish-mib 150] [--rounds 5]
                                            [--baseline 93333b6]

Everything listens on 127.0.0.1 only; every loop is bounded by a request count.

* metadata GET req/s and the server's CPU time per request (user + system of its processes, from
  /proc — what decides the rate when other load competes for the CPUs): ``timestamp.json`` (what every
  host polls) and the current ``N.targets.json``, from qx-update-server (one process: serving.py's front,
  uvicorn behind it), from the server of commit BASELINE (``git archive``, same venv, same data dir; default
  93333b6, the last one whose fast path subclassed uvicorn's protocol) and from nginx
  (``worker_processes 1``) pointed at the server's own ``<data-dir>/repository`` directory — the
  static-hosting baseline; ROUNDS rounds alternating the three, medians;
* check-in req/s and server CPU per check-in: ``POST /v1/checkin`` with a bearer token (SQLite write per
  call), distinct hosts, ours (through the front's hop to uvicorn) beside BASELINE's, alternating;
* publish: wall time of ``qx-release publish`` for a release whose compressed root is PUBLISH_MIB
  (upload with progress, server-side SHA256SUMS + manifest check, move, sign), and the same bytes
  copied with ``cp`` + ``sync`` as the floor;
* metadata p50/p99 latency (``GET /metadata/timestamp.json`` on a fresh connection, as a host polls)
  with no attack and during each attack of issue 16, each bounded in count: 20 check-ins declaring a
  300 MiB body (valid token), 3,000 idle connections (cap 1,000) silent and again each with half a
  request line sent (silent ones stay in the kernel: TCP_DEFER_ACCEPT), 20 full listings of a
  20,000-host fleet page by page;
* the admin page's first render with 20,000 hosts in headless Chromium (navigation to the first
  complete poll), when chromium and chromedriver are installed.

The load generator is CLIENTS Python processes with keep-alive connections (http.client). On a small
machine it competes with the server for CPU, so nginx's figure is bounded by the client; the ratio is
still measured on the same client. Prints a markdown table; saves bench/results/update_server-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import multiprocessing as mp
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "update_server"), str(REPO / "common")]

from tests.update_server.conftest import (  # noqa: E402
    ALL,
    free_port,
    qx_release,
    start_server,
    write_release,
)
from qx_update_server.storage import SQLiteStorage  # noqa: E402


def _worker(port: int, method: str, paths: list[str], n: int, headers: dict[str, str], bodies: list[bytes],
            out: mp.Queue) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    bad = 0
    for i in range(n):
        body = bodies[i % len(bodies)] if bodies else None
        conn.request(method, paths[i % len(paths)], body=body, headers=headers)
        r = conn.getresponse()
        r.read()
        if r.status >= 300:
            bad += 1
    conn.close()
    out.put(bad)


def load(port: int, method: str, paths: list[str], total: int, clients: int, *,
         headers: dict[str, str] | None = None, bodies: list[list[bytes]] | None = None) -> float:
    """Send ``total`` requests over ``clients`` keep-alive connections; return requests per second."""
    q: mp.Queue = mp.Queue()
    per = total // clients
    procs = [mp.Process(target=_worker, args=(port, method, paths, per, headers or {},
                                              (bodies[c] if bodies else []), q)) for c in range(clients)]
    t0 = time.monotonic()
    for p in procs:
        p.start()
    bad = sum(q.get(timeout=600) for _ in procs)
    elapsed = time.monotonic() - t0
    for p in procs:
        p.join()
    if bad:
        raise SystemExit(f"{bad} of {per * clients} {method} requests failed")
    return per * clients / elapsed


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its children (nginx's worker is the master's child)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pids = [pid]
    while pids:
        p = pids.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{p}/task").iterdir():
                pids += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:
            pass
    return total


def start_nginx(root: Path, work: Path) -> tuple[subprocess.Popen[bytes], int]:
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx is None:
        raise SystemExit("nginx is not installed; for the baseline run: apt-get install -y nginx-light")
    port = free_port()
    conf = work / "nginx.conf"
    user = "user root;" if os.geteuid() == 0 else ""
    conf.write_text(f"""{user}
worker_processes 1; daemon off; pid {work}/nginx.pid; error_log {work}/nginx-error.log;
events {{ worker_connections 256; }}
http {{ access_log off; sendfile on; tcp_nopush on; keepalive_requests 100000;
  client_body_temp_path {work}/nginx-body; proxy_temp_path {work}/nginx-proxy;
  fastcgi_temp_path {work}/nginx-fcgi; uwsgi_temp_path {work}/nginx-uwsgi; scgi_temp_path {work}/nginx-scgi;
  types {{ application/json json; }} default_type application/octet-stream;
  server {{ listen 127.0.0.1:{port}; root {root}; }} }}
""")
    proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(work)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", "/metadata/timestamp.json")
            if c.getresponse().status == 200:
                break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"nginx did not start: {(work / 'nginx-error.log').read_text()[-1000:]}")
        time.sleep(0.05)
    return proc, port


def latency_during(port: int, attack: Callable[[], None] | None, samples: int = 300) -> tuple[float, float]:
    """p50 and p99 (ms) of ``samples`` timestamp.json GETs (fresh connection each) while ``attack`` runs."""
    done = threading.Event()

    def run_attack() -> None:
        try:
            if attack:
                attack()
        finally:
            done.set()

    t = threading.Thread(target=run_attack)
    t.start()
    lat: list[float] = []
    for _ in range(samples):
        t0 = time.perf_counter()
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        c.request("GET", "/metadata/timestamp.json")
        r = c.getresponse()
        r.read()
        c.close()
        if r.status != 200:
            raise SystemExit(f"metadata answered {r.status} during an attack")
        lat.append((time.perf_counter() - t0) * 1000)
    t.join()
    lat.sort()
    return statistics.median(lat), lat[min(len(lat) - 1, int(len(lat) * 0.99))]


def attack_big_bodies(port: int, token: str) -> None:
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.sendall(f"POST /v1/checkin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                  f"Content-Type: application/json\r\nContent-Length: {300 << 20}\r\n\r\n".encode() + b"[" * (1 << 20))
        s.recv(65536)
        s.close()


def attack_idle(port: int, first: bytes = b"") -> None:
    """3,000 connections held 2 s; ``first``: bytes each sends at once (a request never finished) —
    what gets past the kernel's deferred accept, to the server's cap and header timeout."""
    socks = []
    try:
        for _ in range(3000):
            try:
                socks.append(socket.create_connection(("127.0.0.1", port), timeout=30))
                if first:
                    socks[-1].sendall(first)
            except OSError:
                break
        time.sleep(2)  # hold them while latency is sampled
    finally:
        for s in socks:
            s.close()


def attack_fleet(port: int, token: str) -> None:
    for _ in range(20):
        after = ""
        while after is not None:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            c.request("GET", f"/v1/fleet?limit=2000&after={after}" if after else "/v1/fleet?limit=2000",
                      headers={"Authorization": f"Bearer {token}"})
            page = json.loads(c.getresponse().read())
            c.close()
            after = page["next"]


def admin_first_render(url: str, token: str) -> float | None:
    """Seconds from navigating to /admin (token already stored) to the first complete render."""
    if not (Path("/usr/bin/chromium").exists() and Path("/usr/bin/chromedriver").exists()):
        return None
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        opts.add_argument(flag)
    d = webdriver.Chrome(options=opts, service=Service("/usr/bin/chromedriver"))
    try:
        d.get(url + "/admin")
        d.execute_script("sessionStorage.setItem('qx-token', arguments[0]);", token)
        t0 = time.monotonic()
        d.get(url + "/admin")
        WebDriverWait(d, 60).until(ec.presence_of_element_located((By.CSS_SELECTOR, "body[data-loaded]")))
        return time.monotonic() - t0
    finally:
        d.quit()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=4000, help="requests per measurement (default 4000)")
    ap.add_argument("--clients", type=int, default=2, help="concurrent keep-alive clients (default 2)")
    ap.add_argument("--publish-mib", type=int, default=150, help="compressed root size to publish (default 150)")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds of each GET measurement (default 5)")
    ap.add_argument("--baseline", default="93333b6", help="an earlier commit whose server runs beside this one "
                                                           "(default 93333b6: the fast path in uvicorn subclasses)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="qxus-bench-", dir="/var/tmp"))
    nginx = None
    server = None
    rows: list[tuple[str, str, str]] = []
    result: dict[str, object] = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                                 "cpus": os.cpu_count(), "requests": args.requests, "clients": args.clients,
                                 "baseline": args.baseline, "loadavg_start": os.getloadavg()}
    try:
        server = start_server(work / "data")
        token = server.token(*ALL)
        qx_release(server, token, "keys", "init")
        qx_release(server, token, "publish", str(write_release(work / "builds", "0.1.0")))
        port = int(server.url.rsplit(":", 1)[1])
        ts = json.loads((work / "data/repository/metadata/timestamp.json").read_text())
        snap_v = ts["signed"]["meta"]["snapshot.json"]["version"]
        snap = json.loads((work / f"data/repository/metadata/{snap_v}.snapshot.json").read_text())
        targets = f"/metadata/{snap['signed']['meta']['targets.json']['version']}.targets.json"
        nginx, nginx_port = start_nginx(work / "data/repository", work)
        # The server of an earlier commit on the same data dir and venv (git archive, as bench/update_server_idle.py).
        base_tree = work / "baseline"
        base_tree.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", args.baseline], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(base_tree)], input=archive, check=True)
        old_server = start_server(work / "data", env={
            "PYTHONPATH": ":".join(str(base_tree / d) for d in ("common", "update_server", "updates"))})
        old_port = int(old_server.url.rsplit(":", 1)[1])

        pids = {"ours": server.proc.pid, "old": old_server.proc.pid, "nginx": nginx.pid}
        for name, path in (("timestamp.json", "/metadata/timestamp.json"), ("N.targets.json", targets)):
            runs: dict[str, list[float]] = {"ours": [], "old": [], "nginx": []}
            cpu: dict[str, list[float]] = {"ours": [], "old": [], "nginx": []}  # server CPU µs per request
            for _ in range(args.rounds):  # alternated, so load from elsewhere hits all three alike
                for key, p in (("ours", port), ("old", old_port), ("nginx", nginx_port)):
                    c0 = cpu_seconds(pids[key])
                    runs[key].append(load(p, "GET", [path], args.requests, args.clients))
                    cpu[key].append((cpu_seconds(pids[key]) - c0) / args.requests * 1e6)
            ours, old, base = (statistics.median(runs[k]) for k in ("ours", "old", "nginx"))
            c_ours, c_old, c_base = (statistics.median(cpu[k]) for k in ("ours", "old", "nginx"))
            rows.append((f"GET {name} req/s (median of {args.rounds})", f"{ours:,.0f} ({ours / base:.2f}x nginx)",
                         f"{base:,.0f} (nginx); {old:,.0f} ({args.baseline}: {old / base:.2f}x)"))
            rows.append((f"GET {name} server CPU µs/request (median)", f"{c_ours:.0f}",
                         f"{c_base:.0f} (nginx); {c_old:.0f} ({args.baseline})"))
            result[f"get_{name}"] = {"qx_update_server": round(ours), "baseline_" + args.baseline: round(old),
                                     "nginx": round(base), "rounds": {k: [round(x) for x in v] for k, v in runs.items()},
                                     "cpu_us_per_request": {k: [round(x) for x in v] for k, v in cpu.items()}}
        n = args.requests // 2
        bodies = [[json.dumps({"host_id": f"host-{c}-{i}", "version": "0.1.0", "slot": "a", "channel": "stable",
                               "health": "good"}).encode() for i in range(200)] for c in range(args.clients)]
        checkin_token = server.token("checkin")
        crate: dict[str, list[float]] = {"ours": [], "old": []}
        ccpu: dict[str, list[float]] = {"ours": [], "old": []}
        for _ in range(args.rounds):  # the front's extra hop for API requests, beside the server without it
            for key, p in (("ours", port), ("old", old_port)):
                c0 = cpu_seconds(pids[key])
                crate[key].append(load(p, "POST", ["/v1/checkin"], n, args.clients, bodies=bodies,
                                       headers={"Authorization": f"Bearer {checkin_token}",
                                                "Content-Type": "application/json"}))
                ccpu[key].append((cpu_seconds(pids[key]) - c0) / n * 1e6)
        old_server.stop()
        rate, rate_old = statistics.median(crate["ours"]), statistics.median(crate["old"])
        rows.append((f"POST /v1/checkin req/s (median of {args.rounds})", f"{rate:,.0f}",
                     f"{rate_old:,.0f} ({args.baseline})"))
        rows.append(("POST /v1/checkin server CPU µs/request (median)", f"{statistics.median(ccpu['ours']):.0f}",
                     f"{statistics.median(ccpu['old']):.0f} ({args.baseline})"))
        result["checkin_rps"] = round(rate)
        result["checkin"] = {"rounds": {k: [round(x) for x in v] for k, v in crate.items()},
                             "cpu_us_per_request": {k: [round(x) for x in v] for k, v in ccpu.items()}}

        size = args.publish_mib * 2**20
        build = write_release(work / "builds", "0.2.0", size=2 * size, zstd_level=1)  # half random: ~size compressed
        upload = sum(p.stat().st_size for p in build.iterdir() if p.name.endswith((".zst", ".efi", ".json", "SUMS")))
        t0 = time.monotonic()
        qx_release(server, token, "publish", str(build))
        pub = time.monotonic() - t0
        t0 = time.monotonic()
        subprocess.run(["cp", "-r", str(build), str(work / "copy")], check=True)
        subprocess.run(["sync"], check=True)
        cp = time.monotonic() - t0
        mib = upload / 2**20
        rows.append((f"publish {mib:.0f} MiB release, s", f"{pub:.2f} ({mib / pub:.0f} MiB/s)",
                     f"{cp:.2f} (cp + sync)"))
        result["publish"] = {"mib": round(mib, 1), "seconds": round(pub, 2), "cp_sync_seconds": round(cp, 2)}

        # ---- attacks: a second server with the connection cap, and a 20,000-host fleet ----
        server.stop()
        db = SQLiteStorage(work / "data" / "server.db")
        for i in range(20000):
            db.checkin({"host_id": f"fleet-{i:05d}", "version": "0.1.0", "slot": "a", "channel": "stable",
                        "health": "good", "last_error": None})
        db.close()
        server = start_server(work / "data", extra_args=["--max-connections", "1000", "--refresh-interval", "3600"])
        port = int(server.url.rsplit(":", 1)[1])
        read = server.token("read")
        checkin2 = server.token("checkin")
        lat: dict[str, dict[str, float]] = {}
        for name, attack in (("none", None), ("300 MiB bodies", lambda: attack_big_bodies(port, checkin2)),
                             ("3,000 idle connections", lambda: attack_idle(port)),
                             ("3,000 connections with half a request line",
                              lambda: attack_idle(port, b"GET /metadata/timestamp.json HT")),
                             ("20,000-host fleet listings", lambda: attack_fleet(port, read))):
            p50, p99 = latency_during(port, attack)
            lat[name] = {"p50_ms": round(p50, 1), "p99_ms": round(p99, 1)}
            rows.append((f"metadata p50 / p99 ms, attack: {name}", f"{p50:.1f} / {p99:.1f}", "goal p99 < 100"))
        result["metadata_latency"] = lat
        render = admin_first_render(server.url, read)
        if render is not None:
            rows.append(("admin page first render, 20,000 hosts, s", f"{render:.2f}", "goal < 2"))
            result["admin_first_render_s"] = round(render, 2)
    finally:
        if nginx is not None:
            nginx.terminate()
            nginx.wait(10)
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)

    result["loadavg_end"] = os.getloadavg()
    print(f"\nqx-update-server bench ({os.cpu_count()} CPUs, {args.clients} clients, {args.requests} requests; "
          f"load average at start {result['loadavg_start'][0]:.1f}, at end {result['loadavg_end'][0]:.1f})\n")
    print("| measure | qx-update-server | baseline |\n|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")
    out = REPO / "bench/results" / f"update_server-{dt.date.today().isoformat()}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nsaved {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
