#!/usr/bin/env python3
"""Benchmark qx-console beside a bare Textual "hello" app, in the same run, on a pseudo-terminal.

For each app: time to first frame (spawn -> the expected text appears on the pty), idle CPU over
``--idle`` seconds (utime+stime from /proc/<pid>/stat), and RSS after idling (VmRSS). Both run with
TERM=linux at 80x24. qx-console runs with ``--demo`` (the fixed in-memory host), so the figures measure
the console itself, not this machine's services. Both apps idle at the same time.

    .venv/bin/python bench/console.py [--idle 60] [--json bench/results/console-<date>.json]
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import pty
import select
import struct
import sys
import termios
import time
from pathlib import Path

HELLO = """
from textual.app import App
from textual.widgets import Static
class Hello(App):
    ENABLE_COMMAND_PALETTE = False
    def compose(self):
        yield Static("Hello from Textual")
Hello().run()
"""


def spawn(argv: list[str]) -> tuple[int, int, float]:
    pid, fd = pty.fork()
    if pid == 0:
        os.environ.update(TERM="linux", LANG="C.UTF-8", COLUMNS="80", LINES="24")
        os.execvp(argv[0], argv)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    return pid, fd, time.monotonic()


def drain(fd: int, timeout: float) -> bytes:
    out = b""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        r, _, _ = select.select([fd], [], [], 0.05)
        if r:
            try:
                out += os.read(fd, 65536)
            except OSError:
                break
    return out


def wait_for(fd: int, needle: bytes, start: float, timeout: float = 60) -> float:
    buf = b""
    while time.monotonic() - start < timeout:
        r, _, _ = select.select([fd], [], [], 0.05)
        if r:
            buf += os.read(fd, 65536)
            if needle in buf:
                return time.monotonic() - start
    raise SystemExit(f"did not see {needle!r} within {timeout} s")


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--idle", type=float, default=60.0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    py = sys.executable
    venv_bin = Path(py).parent
    apps = {
        "textual hello": ([py, "-c", HELLO], b"Hello from Textual"),
        "qx-console --demo": ([str(venv_bin / "qx-console"), "--demo", "--tty", "bench",
                               "--ready-dir", "/tmp/qx-bench-ready"], b"10.0.2.15"),
    }
    res: dict[str, dict[str, float]] = {}
    procs = {}
    for name, (argv, needle) in apps.items():
        pid, fd, t0 = spawn(argv)
        res[name] = {"first_frame_s": round(wait_for(fd, needle, t0), 3)}
        procs[name] = (pid, fd)
    drain_until = time.monotonic() + 2  # let both settle
    for _, fd in procs.values():
        drain(fd, max(0.0, drain_until - time.monotonic()))
    hz = os.sysconf("SC_CLK_TCK")
    before = {n: cpu_ticks(p) for n, (p, _) in procs.items()}
    t0 = time.monotonic()
    while time.monotonic() - t0 < args.idle:  # keep reading so neither blocks on a full pty
        for _, fd in procs.values():
            drain(fd, 0.1)
    wall = time.monotonic() - t0
    for n, (p, fd) in procs.items():
        res[n]["idle_cpu_percent"] = round(100.0 * (cpu_ticks(p) - before[n]) / hz / wall, 2)
        res[n]["rss_mib"] = round(rss_kib(p) / 1024, 1)
        os.kill(p, 9)
        os.waitpid(p, 0)
        os.close(fd)
    print(f"{'app':<20} {'first frame':>12} {'idle CPU':>10} {'RSS':>10}   (idle {wall:.0f} s, TERM=linux, 80x24)")
    for n, r in res.items():
        print(f"{n:<20} {r['first_frame_s']:>10.3f} s {r['idle_cpu_percent']:>8.2f} % {r['rss_mib']:>6.1f} MiB")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"idle_s": round(wall, 1), "results": res}, indent=2) + "\n")


if __name__ == "__main__":
    main()
