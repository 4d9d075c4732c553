"""Safe apply of a dynamic (DHCP / IPv6 autoconf) management network: the probe needs a lease.

A static change names its gateway, so the probe pings it. A DHCP change names none: the probe waits
(bounded) for the default route the lease brings and pings that; no lease within the wait is a failed
probe, and the previous configuration comes back by itself — the same guarantee as for static.
"""

from __future__ import annotations

from dataclasses import replace

from qx_console.hostconfig import HostConfig, IPv4Config, IPv6Config, NetworkConfig
from qx_console.memory import MemoryBackend, MemoryState
from qx_console.safeapply import safe_apply

STATIC = HostConfig(hostname="qx-demo", network=NetworkConfig(
    nic="eno1", ipv4=IPv4Config("static", "10.0.2.15", 24, "10.0.2.2"), ipv6=IPv6Config("off"),
    dns=("10.0.2.3",)))
DHCP = replace(STATIC, network=replace(STATIC.network, ipv4=IPv4Config("dhcp"), dns=()))


def _backend(gateways: list[str], reachable: set[str]) -> MemoryBackend:
    be = MemoryBackend(MemoryState(config=STATIC, gateways=gateways, reachable=reachable))
    be.lease_wait_s = 0.5
    assert safe_apply(be, STATIC, confirm=lambda s: True).kept  # the starting point
    return be


def test_dhcp_change_with_a_lease_probes_the_leased_gateway_and_is_kept() -> None:
    be = _backend(["10.0.2.2"], {"10.0.2.2", "10.0.2.3"})
    out = safe_apply(be, DHCP, confirm=lambda s: True)
    assert out.kept, out.reason
    assert [(p.target, p.what, p.ok) for p in out.probes] == [("10.0.2.2", "gateway", True)]


def test_dhcp_change_without_a_lease_is_reverted_without_asking() -> None:
    be = _backend([], {"10.0.2.2", "10.0.2.3"})
    asked: list[float] = []
    out = safe_apply(be, DHCP, confirm=lambda s: asked.append(s) or True)
    assert be.calls.count("default_gateways") > 1, "the probe polls for a lease before giving up"
    assert not out.kept and "no DHCP lease" in out.reason and "previous configuration restored" in out.reason
    assert asked == []
    cfg, _ = be.load_config()
    assert cfg.network.ipv4.mode == "static" and cfg.network.ipv4.gateway == "10.0.2.2"


def test_dhcp_lease_whose_gateway_does_not_answer_is_reverted() -> None:
    be = _backend(["192.0.2.1"], {"10.0.2.2", "10.0.2.3"})  # the lease names a router nobody answers for
    out = safe_apply(be, DHCP, confirm=lambda s: True)
    assert not out.kept and "gateway 192.0.2.1: no answer" in out.reason
    assert be.load_config()[0].network.ipv4.mode == "static"


def test_static_gateway_is_probed_without_waiting_for_a_lease() -> None:
    be = _backend([], {"10.0.2.2", "10.0.2.3"})
    be.calls.clear()
    moved = replace(STATIC, network=replace(STATIC.network, ipv4=IPv4Config("static", "10.0.2.16", 24, "10.0.2.2")))
    out = safe_apply(be, moved, confirm=lambda s: True)
    assert out.kept and "default_gateways" not in be.calls
    assert [p.target for p in out.probes] == ["10.0.2.2", "10.0.2.3"]
