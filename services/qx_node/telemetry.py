"""Host facts (``GET /v1/host``) and rates (``GET /v1/host/stats``) from psutil.

Nothing samples in the background (idle CPU stays at zero): rates are computed between the
previous call and this one. The first call (or one after a long pause) takes a short sample
window of its own, so every answer carries real rates.
"""

from __future__ import annotations

import os
import platform
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import psutil

from qx_common.version import product_version

MIN_WINDOW = 0.2  # seconds between two samples for a meaningful rate
MAX_AGE = 60.0  # older previous samples are too coarse: sample afresh


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_info(libvirt_version: str | None) -> dict[str, Any]:
    vm = psutil.virtual_memory()
    u = os.uname()
    return {
        "hostname": socket.gethostname(),
        "version": product_version(),
        "kernel": u.release,
        "arch": u.machine,
        "cpu_model": _cpu_model(),
        "cpu_cores": psutil.cpu_count(logical=False) or psutil.cpu_count(),
        "cpu_threads": psutil.cpu_count(),
        "memory_bytes": vm.total,
        "boot_time": psutil.boot_time(),
        "uptime_s": round(time.time() - psutil.boot_time(), 1),
        "libvirt": libvirt_version,
        "virtualization": "kvm" if os.path.exists("/dev/kvm") else "tcg",
    }


@dataclass
class _Sample:
    t: float
    cpu: Any
    disk: Any
    net: Any


class StatsSampler:
    def __init__(self) -> None:
        self._prev: _Sample | None = None
        self._lock = threading.Lock()

    @staticmethod
    def _take() -> _Sample:
        return _Sample(time.monotonic(), psutil.cpu_times(), psutil.disk_io_counters(), psutil.net_io_counters())

    def stats(self) -> dict[str, Any]:
        with self._lock:
            prev = self._prev
            if prev is None or time.monotonic() - prev.t > MAX_AGE:
                prev = self._take()
            wait = MIN_WINDOW - (time.monotonic() - prev.t)
            if wait > 0:
                time.sleep(wait)  # runs in a worker thread, never on the event loop
            cur = self._take()
            self._prev = cur
        dt = cur.t - prev.t
        busy = lambda c: sum(c) - c.idle - getattr(c, "iowait", 0.0)  # noqa: E731
        total = sum(cur.cpu) - sum(prev.cpu)
        cpu_pct = 100.0 * (busy(cur.cpu) - busy(prev.cpu)) / total if total > 0 else 0.0
        vm = psutil.virtual_memory()
        load = os.getloadavg()
        out: dict[str, Any] = {
            "window_s": round(dt, 3),
            "cpu_percent": round(max(cpu_pct, 0.0), 2),
            "load": [round(x, 2) for x in load],
            "memory": {"total_bytes": vm.total, "available_bytes": vm.available, "used_percent": vm.percent},
        }
        if cur.disk is not None and prev.disk is not None:
            out["disk"] = {"read_bytes_per_s": round((cur.disk.read_bytes - prev.disk.read_bytes) / dt),
                           "write_bytes_per_s": round((cur.disk.write_bytes - prev.disk.write_bytes) / dt)}
        if cur.net is not None and prev.net is not None:
            out["net"] = {"rx_bytes_per_s": round((cur.net.bytes_recv - prev.net.bytes_recv) / dt),
                          "tx_bytes_per_s": round((cur.net.bytes_sent - prev.net.bytes_sent) / dt)}
        return out
