"""Prometheus metrics (``GET /metrics``): host gauges/counters and per-VM series.

A custom collector reads everything at scrape time (no background sampling). Per-VM series use
libvirt's bulk ``getAllDomainStats`` (one RPC for all VMs). When libvirtd is unreachable the VM
series are absent and ``qx_node_libvirt_up`` is 0 — a scrape never fails because of it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import libvirt
import psutil
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector

from qx_node.errors import Unavailable
from qx_node.events import EventBus
from qx_node.libvirt_conn import Libvirt

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class NodeCollector:
    def __init__(self, lv: Libvirt, bus: EventBus) -> None:
        self.lv = lv
        self.bus = bus

    def collect(self) -> Iterator[Metric]:
        cpu = psutil.cpu_times()
        c = CounterMetricFamily("qx_host_cpu_seconds", "Host CPU time by mode", labels=["mode"])
        for mode in ("user", "system", "idle", "iowait", "irq", "softirq", "steal"):
            c.add_metric([mode], getattr(cpu, mode, 0.0))
        yield c
        vm = psutil.virtual_memory()
        yield GaugeMetricFamily("qx_host_memory_total_bytes", "Host memory", value=vm.total)
        yield GaugeMetricFamily("qx_host_memory_available_bytes", "Host memory available", value=vm.available)
        load = GaugeMetricFamily("qx_host_load", "Load average", labels=["period"])
        for period, v in zip(("1m", "5m", "15m"), psutil.getloadavg()):
            load.add_metric([period], v)
        yield load
        net = psutil.net_io_counters(pernic=True)
        rx = CounterMetricFamily("qx_host_network_receive_bytes", "Bytes received", labels=["device"])
        tx = CounterMetricFamily("qx_host_network_transmit_bytes", "Bytes sent", labels=["device"])
        for dev, n in net.items():
            rx.add_metric([dev], n.bytes_recv)
            tx.add_metric([dev], n.bytes_sent)
        yield rx
        yield tx
        yield GaugeMetricFamily("qx_node_libvirt_up", "1 when libvirtd is connected", value=int(self.lv.connected))
        yield CounterMetricFamily("qx_node_libvirt_connects", "Connections made to libvirtd", value=self.lv.connects)
        yield CounterMetricFamily("qx_node_events", "Events published", value=self.bus.published)
        yield from self._vms()

    def _vms(self) -> Iterator[Metric]:
        stats: list[tuple[libvirt.virDomain, dict[str, Any]]] = []
        with contextlib.suppress(Unavailable, libvirt.libvirtError):
            stats = self.lv.conn().getAllDomainStats(
                libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL | libvirt.VIR_DOMAIN_STATS_BALLOON
                | libvirt.VIR_DOMAIN_STATS_VCPU | libvirt.VIR_DOMAIN_STATS_INTERFACE | libvirt.VIR_DOMAIN_STATS_BLOCK)
        fams = {
            "state": GaugeMetricFamily("qx_vm_state", "libvirt state (1 running, 3 paused, 5 shutoff)", labels=["vm"]),
            "cpu": CounterMetricFamily("qx_vm_cpu_seconds", "VM CPU time", labels=["vm"]),
            "vcpus": GaugeMetricFamily("qx_vm_vcpus", "vCPUs", labels=["vm"]),
            "mem": GaugeMetricFamily("qx_vm_memory_bytes", "Current balloon size", labels=["vm"]),
            "rd": CounterMetricFamily("qx_vm_disk_read_bytes", "Disk bytes read", labels=["vm", "disk"]),
            "wr": CounterMetricFamily("qx_vm_disk_write_bytes", "Disk bytes written", labels=["vm", "disk"]),
            "rx": CounterMetricFamily("qx_vm_network_receive_bytes", "NIC bytes received", labels=["vm", "nic"]),
            "tx": CounterMetricFamily("qx_vm_network_transmit_bytes", "NIC bytes sent", labels=["vm", "nic"]),
        }
        for dom, s in stats:
            try:
                name = dom.name()
            except libvirt.libvirtError:
                continue
            fams["state"].add_metric([name], s.get("state.state", 0))
            if "cpu.time" in s:
                fams["cpu"].add_metric([name], s["cpu.time"] / 1e9)
            if "vcpu.current" in s:
                fams["vcpus"].add_metric([name], s["vcpu.current"])
            if "balloon.current" in s:
                fams["mem"].add_metric([name], s["balloon.current"] * 1024)
            for i in range(s.get("block.count", 0)):
                dev = s.get(f"block.{i}.name", str(i))
                if f"block.{i}.rd.bytes" in s:
                    fams["rd"].add_metric([name, dev], s[f"block.{i}.rd.bytes"])
                    fams["wr"].add_metric([name, dev], s.get(f"block.{i}.wr.bytes", 0))
            for i in range(s.get("net.count", 0)):
                dev = s.get(f"net.{i}.name", str(i))
                fams["rx"].add_metric([name, dev], s.get(f"net.{i}.rx.bytes", 0))
                fams["tx"].add_metric([name, dev], s.get(f"net.{i}.tx.bytes", 0))
        yield from fams.values()


def make_registry(lv: Libvirt, bus: EventBus) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(NodeCollector(lv, bus))  # type: ignore[arg-type]
    ProcessCollector(namespace="qx_node", registry=reg)
    return reg


def render(reg: CollectorRegistry) -> bytes:
    return generate_latest(reg)
