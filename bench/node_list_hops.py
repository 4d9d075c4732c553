#!/usr/bin/env python3
"""GET /v1/vms as it is beside the route as it was (a sync handler returning ``list[dict]``: FastAPI
runs it on a worker thread and validates its value on another), in one process, alternating.

The app is called straight through ASGI (no TLS, no sockets): what differs between the two is only
the route, so the machine's load weighs on both alike. The node runs on libvirt's test driver with
``--vms`` VMs (defined, shut off); both routes must answer the same list.

Usage: .venv/bin/python bench/node_list_hops.py [--vms 50] [--requests 2000]
Prints median, p90 and p99 of each route and the load average before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "services"), str(REPO / "common")]

from fastapi import Request  # noqa: E402

from qx_node.api import create_app  # noqa: E402
from qx_node.node import Node  # noqa: E402
from qx_node.settings import Settings  # noqa: E402
from qx_node.vmspec import parse_vm_spec  # noqa: E402


class NoPower:
    """The host's reboot/poweroff: never called here."""

    def reboot(self) -> None:
        raise AssertionError("not in a benchmark")

    def poweroff(self) -> None:
        raise AssertionError("not in a benchmark")


def old_list_vms(request: Request) -> list[dict[str, Any]]:
    """The route before it awaited the list itself."""
    return request.app.state.node.vms.list()  # type: ignore[no-any-return]


async def run(vms: int, requests: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="qx-node-list-hops-"))
    node = Node(Settings(host="127.0.0.1", port=0, libvirt_uri="test:///default", state_dir=tmp / "state",
                         console_ready_dir=None, pool_dir=tmp / "pool", pool_name="qx-bench"), power=NoPower())
    app = create_app(node)
    app.add_api_route("/v1/vms-old", old_list_vms, methods=["GET"])

    async def call(path: str) -> list[dict[str, Any]]:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
                 "scheme": "https", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
                 "headers": [(b"host", b"127.0.0.1"), (b"authorization", f"Bearer {node.token}".encode())],
                 "client": ("127.0.0.1", 1234), "server": ("127.0.0.1", 8443), "state": {}}
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(m: dict[str, Any]) -> None:
            sent.append(m)

        await app(scope, receive, send)
        return sent

    async with app.router.lifespan_context(app):
        have = len(node.vms.list())
        for i in range(have, vms):
            node.vms.create(parse_vm_spec({"name": f"bench-{i}", "memory_mib": 64, "start": False}))
        old, new = await call("/v1/vms-old"), await call("/v1/vms")
        assert old[0]["status"] == new[0]["status"] == 200
        assert json.loads(old[1]["body"]) == json.loads(new[1]["body"]) and len(json.loads(new[1]["body"])) == vms
        times: dict[str, list[float]] = {"/v1/vms (before)": [], "/v1/vms": []}
        load = os.getloadavg()
        for _ in range(requests):
            for label, path in (("/v1/vms (before)", "/v1/vms-old"), ("/v1/vms", "/v1/vms")):
                t = time.perf_counter()
                await call(path)
                times[label].append(time.perf_counter() - t)
        print(f"{vms} VMs, {requests} requests each, load average {load[0]:.2f} -> {os.getloadavg()[0]:.2f}")
        for label, xs in times.items():
            xs.sort()
            print(f"{label:<18} median {statistics.median(xs) * 1e3:.3f} ms  p90 {xs[int(len(xs) * 0.9)] * 1e3:.3f} ms"
                  f"  p99 {xs[int(len(xs) * 0.99)] * 1e3:.3f} ms")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vms", type=int, default=50)
    ap.add_argument("--requests", type=int, default=2000)
    args = ap.parse_args()
    asyncio.run(run(args.vms, args.requests))
    return 0


if __name__ == "__main__":
    sys.exit(main())
