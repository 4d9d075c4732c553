"""Metadata latency during the idle-connection attack, this checkout's server beside an older commit's.

    .venv/bin/python bench/update_server_idle.py [--baseline 8c3b9b1] [--rounds 5] [--half-request]

Both servers run on one data directory (``--max-connections 1000``) on 127.0.0.1, in alternating rounds;
each round opens 3,000 idle connections to one server (``--half-request``: each sends half a request
line, which gets past the kernel's deferred accept) while 300 ``GET /metadata/timestamp.json`` on fresh
connections are timed (``bench/update_server.py``'s own attack and sampler), and the server's CPU time
(user + system from /proc) from the attack's start to 1.5 s after its end is taken — less noisy than the
p99 on a shared machine. The baseline's code comes from ``git archive BASELINE`` and runs with the same
venv. Prints p50/p99/CPU per round and the medians.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench"), str(REPO / "update_server"), str(REPO / "common")]

from tests.update_server.conftest import ALL, qx_release, start_server  # noqa: E402
from update_server import attack_idle, cpu_seconds, latency_during  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", default="8c3b9b1", help="commit to compare with (default 8c3b9b1: h11, "
                                                          "a 0.5 s tick per connection)")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    ap.add_argument("--half-request", action="store_true", help="each idle connection sends half a request line")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="qxus-idle-", dir="/var/tmp"))
    servers = []
    try:
        base = work / "baseline"
        base.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", args.baseline], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
        flags = ["--max-connections", "1000", "--refresh-interval", "3600"]
        current = start_server(work / "data", extra_args=flags)
        servers.append(current)
        qx_release(current, current.token(*ALL), "keys", "init")
        old = start_server(work / "data", extra_args=flags, env={
            "PYTHONPATH": ":".join(str(base / d) for d in ("common", "update_server", "updates"))})
        servers.append(old)
        first = b"GET /metadata/timestamp.json HT" if args.half_request else b""
        p99s: dict[str, list[float]] = {"current": [], args.baseline: []}
        cpus: dict[str, list[float]] = {"current": [], args.baseline: []}
        for rnd in range(args.rounds):
            for name, s in (("current", current), (args.baseline, old)):
                port = int(s.url.rsplit(":", 1)[1])
                c0 = cpu_seconds(s.proc.pid)
                p50, p99 = latency_during(port, lambda port=port: attack_idle(port, first))
                time.sleep(1.5)  # the closes the attack's end causes
                cpu = (cpu_seconds(s.proc.pid) - c0) * 1000
                p99s[name].append(p99)
                cpus[name].append(cpu)
                print(f"round {rnd + 1} {name}: p50 {p50:.1f} ms, p99 {p99:.1f} ms, server CPU {cpu:.0f} ms",
                      flush=True)
        for name, values in p99s.items():
            print(f"{name}: p99 median {statistics.median(values):.1f} ms of {[round(v, 1) for v in values]}; "
                  f"server CPU median {statistics.median(cpus[name]):.0f} ms of {[round(v) for v in cpus[name]]}")
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
