#!/usr/bin/env python3
"""Benchmark qx-node's web client in headless Chromium against a real ``qx-node serve`` process on 127.0.0.1
(libvirt test:///default).

Measures:
* meaningful paint of the dashboard and of the VM list: the Performance API mark the page sets the first
  time it shows its data (``qx:dashboard`` / ``qx:vms``, in ms from navigation start), beside Chromium's
  first-contentful-paint; each over ``--runs`` fresh loads (cache disabled) after signing in; the VM list
  with ``--vms`` VMs defined through the API (the test driver's own one plus the rest, shut off);
* the transfer size of the first load (fresh profile, empty cache): the navigation's and every
  resource's ``transferSize`` (compressed bytes on the wire, headers included) for the dashboard, and
  what the console page adds when it loads noVNC;
* qx-node's RSS (VmRSS of the server process): after start and ``--idle`` seconds with no client, and
  after ``--use`` seconds with ``--clients`` browser tabs signed in on the dashboard (its 2 s stats poll
  and the SSE stream) and a walk over the VM list.

Usage: .venv/bin/python bench/web.py [--runs 5] [--vms 50] [--idle 10] [--use 60] [--clients 2]
Prints a table and writes bench/results/web-<UTC time>.json. Needs chromium and chromium-driver.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def chrome(profile: Path) -> webdriver.Chrome:
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--window-size=1280,900",
                 f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    opts.accept_insecure_certs = True
    d = webdriver.Chrome(options=opts, service=Service("/usr/bin/chromedriver"))
    d.set_page_load_timeout(60)
    return d


def sign_in(d: webdriver.Chrome, base: str, token: str) -> None:
    d.get(base + "/")
    WebDriverWait(d, 30).until(ec.presence_of_element_located((By.ID, "signin-mode"))).click()
    d.find_element(By.ID, "secret").send_keys(token)
    d.find_element(By.ID, "signin-submit").click()
    WebDriverWait(d, 30).until(lambda x: x.execute_script("return document.body.dataset.signedIn") == "1")


def timings(d: webdriver.Chrome, url: str, mark: str) -> dict[str, float]:
    d.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
    d.get("about:blank")
    d.get(url)
    WebDriverWait(d, 60).until(lambda x: x.execute_script(
        "return performance.getEntriesByName(arguments[0], 'mark').length", mark))
    return d.execute_script(
        "const fcp = performance.getEntriesByName('first-contentful-paint')[0];"
        "const nav = performance.getEntriesByType('navigation')[0];"
        "return {mark: performance.getEntriesByName(arguments[0], 'mark')[0].startTime,"
        "        fcp: fcp ? fcp.startTime : null, dom_content_loaded: nav.domContentLoadedEventEnd,"
        "        slowest: performance.getEntriesByType('resource').sort((a, b) => b.duration - a.duration)"
        "                 .slice(0, 3).map((e) => [e.name, Math.round(e.startTime), Math.round(e.duration)])};", mark)


def transfer(d: webdriver.Chrome) -> dict[str, Any]:
    return d.execute_script(
        "const nav = performance.getEntriesByType('navigation')[0];"
        "const res = performance.getEntriesByType('resource');"
        "const sum = (xs, k) => xs.reduce((a, e) => a + e[k], 0);"
        "return {requests: res.length + 1, transfer_bytes: nav.transferSize + sum(res, 'transferSize'),"
        "        decoded_bytes: nav.decodedBodySize + sum(res, 'decodedBodySize')};")


def summary(xs: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(xs), 1), "min": round(min(xs), 1), "max": round(max(xs), 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--vms", type=int, default=50)
    ap.add_argument("--idle", type=float, default=10)
    ap.add_argument("--use", type=float, default=60)
    ap.add_argument("--clients", type=int, default=2)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="qx-bench-web-"))
    port = free_port()
    base = f"https://127.0.0.1:{port}"
    node = subprocess.Popen([sys.executable, "-m", "qx_node", "serve", "--listen", f"127.0.0.1:{port}",
                             "--libvirt-uri", "test:///default", "--state-dir", str(work / "state"),
                             "--pool-dir", str(work / "pool"), "--no-console-check"],
                            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "services"),
                                                                              str(REPO / "common")])})
    out: dict[str, Any] = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "args": vars(args),
                           "cpus": os.cpu_count()}
    drivers: list[webdriver.Chrome] = []
    try:
        cert = work / "state/tls/cert.pem"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(base + "/health", verify=ssl.create_default_context(cafile=str(cert)), timeout=2)
                break
            except (httpx.HTTPError, OSError, ssl.SSLError):
                if time.monotonic() > deadline or node.poll() is not None:
                    raise SystemExit("qx-node did not start")
                time.sleep(0.2)
        token = (work / "state/api-token").read_text().strip()
        api = httpx.Client(base_url=base, verify=ssl.create_default_context(cafile=str(cert)),
                           headers={"Authorization": f"Bearer {token}"}, timeout=60)
        time.sleep(args.idle)
        out["rss_mib_no_ui"] = round(rss_mib(node.pid), 1)

        d = chrome(work / "profile-0")
        drivers.append(d)
        d.execute_cdp_cmd("Network.enable", {})
        d.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
        sign_in(d, base, token)
        WebDriverWait(d, 60).until(lambda x: x.execute_script(
            "return performance.getEntriesByName('qx:dashboard', 'mark').length"))
        out["first_load_dashboard"] = transfer(d)  # sign-in page + dashboard: one page load
        dash = [timings(d, base + "/#/", "qx:dashboard") for _ in range(args.runs)]
        for i in range(1, args.vms):
            r = api.post("/v1/vms?wait=true", json={"name": f"bench{i:02d}", "vcpus": 1, "memory_mib": 64,
                                                    "start": False})
            r.raise_for_status()
        assert len(api.get("/v1/vms").json()) == args.vms
        vms = [timings(d, base + "/#/vms", "qx:vms") for _ in range(args.runs)]
        rows = d.execute_script("return document.querySelectorAll('#vm-table tbody tr').length")
        assert rows == args.vms, rows
        out["dashboard_ms"] = {k: summary([r[k] for r in dash]) for k in ("mark", "fcp", "dom_content_loaded")}
        out["vm_list_ms"] = {k: summary([r[k] for r in vms]) for k in ("mark", "fcp", "dom_content_loaded")}
        out["vm_list_rows"] = rows
        out["slowest_resources"] = [r["slowest"] for r in dash + vms if r["mark"] > 5000]
        out["raw_ms"] = {"dashboard_mark": [round(r["mark"]) for r in dash], "vm_list_mark": [round(r["mark"]) for r in vms]}

        # The console page's extra transfer: noVNC's modules (the test driver has no VNC server: the
        # ticket is refused, so only the page and libraries are measured, as the page imports them).
        d.execute_script("performance.clearResourceTimings()")
        d.execute_script("return import('/ui/vendor/novnc/core/rfb.js').then(() => 1)")
        out["console_extra"] = d.execute_script(
            "const res = performance.getEntriesByType('resource');"
            "return {requests: res.length, transfer_bytes: res.reduce((a, e) => a + e.transferSize, 0)};")

        for i in range(1, args.clients):
            extra = chrome(work / f"profile-{i}")
            drivers.append(extra)
            sign_in(extra, base, token)
        d.get(base + "/#/")
        end = time.monotonic() + args.use
        while time.monotonic() < end:
            for x in drivers:
                x.get(base + "/#/vms")
            time.sleep(5)
            for x in drivers:
                x.get(base + "/#/")
            time.sleep(5)
        out["rss_mib_ui_in_use"] = round(rss_mib(node.pid), 1)
    finally:
        for x in drivers:
            x.quit()
        node.terminate()
        node.wait(30)
    print(json.dumps(out, indent=2))
    res = REPO / "bench/results" / f"web-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    res.write_text(json.dumps(out, indent=2) + "\n")
    print(f"written {res.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
