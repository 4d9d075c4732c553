"""Host facts (``GET /v1/host``) and rates (``GET /v1/host/stats``) from psutil.

Beside psutil, the facts read the kernel command line (the running A/B slot; for a verity boot also the
partition its root hash names, through /dev/disk/by-partuuid and sysfs), ``/proc/cpuinfo``
and ``/dev/kvm`` (whether KVM guests can run); their paths come from the settings, so tests can
point them at files of their own.

``GET /v1/host/stats`` samples nothing in the background: its rates are computed between the previous
call and this one. The first call (or one after a long pause) takes a short sample window of its own,
so every answer carries real rates.

The one background sampler is :class:`StatsHistory` (``GET /v1/host/metrics/history``, the dashboard's
charts of the last hour): one thread takes the same rates every ``interval`` seconds (5 s: 720 samples
an hour) into a fixed ring of ``array('d')`` columns allocated once — 6 columns × 8 bytes × 720 =
34,560 bytes, whatever the uptime. Each sample is also published (``publish``: the node's event bus, a
``stats`` event on ``/v1/events``), so open pages go on live from the same sampler and clock. Call order:
``StatsHistory(interval, publish)`` → ``start()`` (Node.start) → ``series()`` any time, from any thread →
``stop()`` (Node.close).
"""

from __future__ import annotations

import os
import platform
import socket
import threading
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from qx_common import log
from qx_common.slot import booted_slot
from qx_common.version import product_version
from qx_node.settings import (DEFAULT_BY_PARTUUID, DEFAULT_KVM_DEVICE, DEFAULT_PROC_CMDLINE, DEFAULT_PROC_CPUINFO,
                              DEFAULT_SYS_CLASS_BLOCK)

_log = log.get("node.telemetry")
MIN_WINDOW = 0.2  # seconds between two samples for a meaningful rate
MAX_AGE = 60.0  # older previous samples are too coarse: sample afresh


def running_slot(cmdline: Path, *, by_partuuid: Path = DEFAULT_BY_PARTUUID,
                 sys_class_block: Path = DEFAULT_SYS_CLASS_BLOCK) -> str | None:
    """The booted A/B slot ("a" or "b"), or None when not booted from a Quantix slot (e.g. a dev machine).
    The rule is qx_common.slot's, the one every package uses (``root=PARTLABEL=`` or ``roothash=``)."""
    try:
        text = cmdline.read_text()
    except OSError:
        return None
    return booted_slot(text, by_partuuid=by_partuuid, sys_class_block=sys_class_block)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _cpu_model(cpuinfo: str) -> str:
    for line in cpuinfo.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _cpu_flags(cpuinfo: str) -> set[str]:
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            return set(value.split())
    return set()


def kvm_status(device: Path, cpuinfo: str) -> dict[str, Any]:
    """``{"usable": bool, "reason": str}``: can this host run KVM guests?

    Both conditions are needed (the rule of qx_build.qemu.kvm_usable): ``/dev/kvm`` must open
    read-write, and the CPU must advertise vmx or svm. Under a software-nested hypervisor
    (firecracker-style dev VMs) ``/dev/kvm`` exists and opens, but without the flags every KVM guest
    dies at start: such a host must run guests with TCG.
    """
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return {"usable": False, "reason": f"{device} does not exist (kvm module not loaded, or "
                                           "virtualization disabled in the firmware)"}
    except OSError as e:
        return {"usable": False, "reason": f"{device}: cannot open read-write: {e.strerror or e}"}
    os.close(fd)
    flags = _cpu_flags(cpuinfo) & {"vmx", "svm"}
    if not flags:
        return {"usable": False, "reason": "the CPU advertises neither vmx nor svm (nested virtualization "
                                           "off?): KVM guests would fail; use TCG"}
    return {"usable": True, "reason": f"{device} opens read-write and the CPU has {min(flags)}"}


def kvm_usable(device: Path, cpuinfo: Path) -> bool:
    """:func:`kvm_status` from the files themselves (what VM creation asks before picking KVM)."""
    return bool(kvm_status(device, _read(cpuinfo))["usable"])


def host_info(libvirt_version: str | None, *, cmdline: Path = DEFAULT_PROC_CMDLINE,
              cpuinfo: Path = DEFAULT_PROC_CPUINFO, kvm_device: Path = DEFAULT_KVM_DEVICE,
              by_partuuid: Path = DEFAULT_BY_PARTUUID, sys_class_block: Path = DEFAULT_SYS_CLASS_BLOCK) -> dict[str, Any]:
    vm = psutil.virtual_memory()
    u = os.uname()
    cpu = _read(cpuinfo)
    kvm = kvm_status(kvm_device, cpu)
    return {
        "hostname": socket.gethostname(),
        "version": product_version(),
        "slot": running_slot(cmdline, by_partuuid=by_partuuid, sys_class_block=sys_class_block),
        "kernel": u.release,
        "arch": u.machine,
        "cpu_model": _cpu_model(cpu),
        "cpu_cores": psutil.cpu_count(logical=False) or psutil.cpu_count(),
        "cpu_threads": psutil.cpu_count(),
        "memory_bytes": vm.total,
        "boot_time": psutil.boot_time(),
        "uptime_s": round(time.time() - psutil.boot_time(), 1),
        "libvirt": libvirt_version,
        "kvm": kvm,
        "virtualization": "kvm" if kvm["usable"] else "tcg",  # kept for older clients; "kvm" says why
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


HISTORY_SPAN = 3600.0  # seconds of samples kept
HISTORY_COLUMNS = ("t", "cpu", "mem", "disk", "net", "load")


class StatsHistory:
    """The last hour of host rates, one sample per ``interval`` s, in a ring of fixed size (see the module)."""

    def __init__(self, interval: float = 5.0, span: float = HISTORY_SPAN,
                 publish: Callable[[dict[str, Any]], None] | None = None) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.interval = interval
        self.capacity = max(1, round(span / interval))
        self._cols = {c: array("d", bytes(8 * self.capacity)) for c in HISTORY_COLUMNS}
        self._count = 0  # samples recorded ever; the newest is at (count - 1) % capacity
        self._lock = threading.Lock()
        self._sampler = StatsSampler()  # its own previous sample: the API's /v1/host/stats callers do not share it
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._publish = publish

    @property
    def nbytes(self) -> int:
        """The ring's memory (its arrays' buffers): fixed at construction."""
        return sum(a.itemsize * len(a) for a in self._cols.values())

    def record(self, t: float, stats: dict[str, Any]) -> dict[str, float]:
        """Keep one answer of :meth:`StatsSampler.stats` taken at wall-clock time ``t``; the oldest sample
        goes once the ring is full. Returns the sample as :meth:`series` gives it (a value per column)."""
        disk, net = stats.get("disk") or {}, stats.get("net") or {}
        row = (t, float(stats["cpu_percent"]), float(stats["memory"]["used_percent"]),
               float(disk.get("read_bytes_per_s", 0) + disk.get("write_bytes_per_s", 0)),
               float(net.get("rx_bytes_per_s", 0) + net.get("tx_bytes_per_s", 0)), float(stats["load"][0]))
        with self._lock:
            i = self._count % self.capacity
            for c, v in zip(HISTORY_COLUMNS, row):
                self._cols[c][i] = v
            self._count += 1
        return {c: round(v, 2) for c, v in zip(HISTORY_COLUMNS, row)}

    def series(self) -> dict[str, Any]:
        """The kept samples, oldest first, as columns (``t``: Unix time; cpu and mem: percent; disk and net:
        bytes/s read+written and received+sent; load: the 1-minute load average)."""
        with self._lock:
            n = min(self._count, self.capacity)
            order = [(self._count - n + k) % self.capacity for k in range(n)]
            cols = {c: [round(a[j], 2) for j in order] for c, a in self._cols.items()}
        return {"interval_s": self.interval, "span_s": self.capacity * self.interval, "count": n, **cols}

    def sample(self) -> None:
        """Take one sample now and publish it (the thread's step)."""
        row = self.record(time.time(), self._sampler.stats())
        if self._publish is not None:
            self._publish({"type": "stats", **row})

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - psutil failing once must not end the charts' history
                _log.warning("telemetry: a history sample failed", exc_info=True)

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="stats-history", daemon=True)
            self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
