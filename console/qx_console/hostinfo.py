"""Facts about this host for the status screen, gathered without blocking the UI thread's caller.

Everything here is plain, synchronous and fast-failing; the app calls it from a worker.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

import psutil

from qx_common.version import PRODUCT_NAME, product_version


@dataclass(frozen=True)
class HostStatus:
    product: str
    version: str
    hostname: str
    addresses: list[tuple[str, str]] = field(default_factory=list)  # (interface, address)
    cpu_percent: float = 0.0
    mem_used: int = 0
    mem_total: int = 0
    uptime_s: float = 0.0


def management_addresses() -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for ifname, addrs in sorted(psutil.net_if_addrs().items()):
        if ifname == "lo":
            continue
        for a in addrs:
            if a.family == socket.AF_INET:
                out.append((ifname, a.address))
            elif a.family == socket.AF_INET6 and not a.address.startswith("fe80"):
                out.append((ifname, a.address.split("%")[0]))
    return out


def gather() -> HostStatus:
    mem = psutil.virtual_memory()
    return HostStatus(
        product=PRODUCT_NAME,
        version=product_version(),
        hostname=socket.gethostname(),
        addresses=management_addresses(),
        cpu_percent=psutil.cpu_percent(interval=None),
        mem_used=mem.total - mem.available,
        mem_total=mem.total,
        uptime_s=time.time() - psutil.boot_time(),
    )
