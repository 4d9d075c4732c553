"""What the machine reports about itself: CPU load, memory, uptime, the running hostname and the booted
A/B slot (``root=PARTLABEL=root-<slot>`` on the kernel command line, or the partition its ``roothash=``
names: :func:`qx_common.slot.booted_slot`, through ``dev/disk/by-partuuid`` and ``sys/class/block`` under
the root prefix). Whether that slot is blessed is qx-update's to say (its status,
:mod:`qx_console.host.updates`): the console never reads the ESP.
Read-only; a missing or odd file is shown as unknown, never an error.

:meth:`Machine.cpu_percent` is the load since the previous call (``None`` on the first one): the status
screen calls it once per refresh.
"""

from __future__ import annotations

import socket

from qx_common.slot import booted_slot
from qx_console.host.context import HostContext


class Machine:
    def __init__(self, ctx: HostContext) -> None:
        self.ctx = ctx
        self._cpu_prev: tuple[int, int] | None = None

    def cpu_percent(self) -> float | None:
        line = self.ctx.read("proc/stat").split("\n", 1)[0].split()
        if len(line) < 5 or line[0] != "cpu":
            return None
        vals = [int(x) for x in line[1:]]
        idle, total = vals[3] + (vals[4] if len(vals) > 4 else 0), sum(vals)
        prev, self._cpu_prev = self._cpu_prev, (idle, total)
        if prev is None or total == prev[1]:
            return None
        return 100.0 * (1 - (idle - prev[0]) / (total - prev[1]))

    def memory(self) -> tuple[int, int]:
        """(used, total) bytes; used = total - MemAvailable."""
        info = {}
        for line in self.ctx.read("proc/meminfo").splitlines():
            k, _, v = line.partition(":")
            info[k] = int(v.split()[0]) * 1024 if v.split() else 0
        total = info.get("MemTotal", 0)
        return total - info.get("MemAvailable", total), total

    def uptime_s(self) -> float:
        try:
            return float((self.ctx.read("proc/uptime", "0").split() or ["0"])[0])
        except ValueError:
            return 0.0

    def hostname(self) -> str:
        return self.ctx.read("proc/sys/kernel/hostname").strip() or socket.gethostname()

    def slot(self) -> str:
        """"A"/"B", the booted slot; "?" when the command line does not say."""
        slot = booted_slot(self.ctx.read("proc/cmdline"), by_partuuid=self.ctx.path("dev/disk/by-partuuid"),
                           sys_class_block=self.ctx.path("sys/class/block"))
        return slot.upper() if slot else "?"
