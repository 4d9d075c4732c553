"""Safe apply FOR REAL inside network namespaces: the same file-writing code as on a host, activation
with `ip` (networkd does not run here), probes with `ping` inside the namespace."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from qx_console.clients import UpdateClient
from qx_console.hostconfig import HostConfig, IPv4Config, IPv6Config, NetworkConfig
from qx_console.linux import IpActivator, LinuxBackend
from qx_console.safeapply import recover_interrupted, safe_apply
from qx_console.store import snapshot_dir

pytestmark = pytest.mark.root

GOOD = HostConfig(hostname="host1", network=NetworkConfig(
    nic="mgmt0", ipv4=IPv4Config("static", "10.77.0.10", 24, "10.77.0.1"), ipv6=IPv6Config("off"),
    dns=("10.77.0.53",)))
# Moves the host to a subnet where nobody answers: the gateway is lost.
LOST = replace(GOOD, network=replace(GOOD.network, ipv4=IPv4Config("static", "10.78.0.10", 24, "10.78.0.1")))
MOVED = replace(GOOD, network=replace(GOOD.network, ipv4=IPv4Config("static", "10.77.0.20", 24, "10.77.0.1")))


def addrs(ns: str) -> list[str]:
    out = subprocess.run(["ip", "-n", ns, "-j", "addr", "show", "mgmt0"], check=True, capture_output=True).stdout
    return [f"{a['local']}/{a['prefixlen']}" for link in json.loads(out) for a in link["addr_info"]
            if a["family"] == "inet"]


def state(be: LinuxBackend) -> tuple[dict[str, str], str]:
    return snapshot_dir(be.store.network_dir), be.store.config_file.read_text()


@pytest.fixture
def backend(hostroot: Path, netns_pair: tuple[str, str]) -> LinuxBackend:
    be = LinuxBackend(hostroot, netns=netns_pair[0], activator=IpActivator(),
                      updates=UpdateClient(["/nonexistent/qx-update"]))
    out = safe_apply(be, GOOD, confirm=lambda s: True)  # the starting point: a working network
    assert out.kept, out.reason
    return be


def test_good_change_stays(backend: LinuxBackend, netns_pair: tuple[str, str]) -> None:
    out = safe_apply(backend, MOVED, confirm=lambda s: True)
    assert out.kept and all(p.ok for p in out.probes)
    assert addrs(netns_pair[0]) == ["10.77.0.20/24"]
    files, cfg = state(backend)
    assert "Address=10.77.0.20/24\n" in files["10-quantix-mgmt.network"]
    assert json.loads(cfg)["network"]["ipv4"]["address"] == "10.77.0.20"
    assert backend.pending() is None
    assert backend.store.provenance()["network.ipv4"] == "console"


def test_change_that_loses_the_gateway_is_reverted(backend: LinuxBackend, netns_pair: tuple[str, str]) -> None:
    before = state(backend)
    asked = []
    out = safe_apply(backend, LOST, confirm=lambda s: asked.append(s) or True)
    assert not out.kept and "gateway 10.78.0.1" in out.reason
    assert asked == [], "the operator is not asked to keep a network that does not work"
    assert addrs(netns_pair[0]) == ["10.77.0.10/24"]
    assert state(backend) == before
    assert backend.pending() is None
    assert backend.ping("10.77.0.1", "gateway").ok


def test_unconfirmed_change_is_reverted(backend: LinuxBackend, netns_pair: tuple[str, str]) -> None:
    before = state(backend)
    out = safe_apply(backend, MOVED, confirm=lambda s: False, confirm_seconds=0.1)
    assert not out.kept and "not confirmed" in out.reason
    assert addrs(netns_pair[0]) == ["10.77.0.10/24"]
    assert state(backend) == before


def test_restore_previous_menu_item(backend: LinuxBackend, netns_pair: tuple[str, str]) -> None:
    before = state(backend)
    assert safe_apply(backend, MOVED, confirm=lambda s: True).kept
    backend.restore_previous_network()
    assert addrs(netns_pair[0]) == ["10.77.0.10/24"]
    assert state(backend) == before


def test_interrupted_apply_is_reverted_at_next_start(backend: LinuxBackend, netns_pair: tuple[str, str]) -> None:
    before = state(backend)
    backend.write_network(MOVED)
    backend.mark_pending({"since": 0})
    backend.activate_network()  # ...and the console died here
    assert addrs(netns_pair[0]) == ["10.77.0.20/24"]
    assert recover_interrupted(backend)
    assert addrs(netns_pair[0]) == ["10.77.0.10/24"] and state(backend) == before
    assert not recover_interrupted(backend)


def test_network_tests_from_the_namespace(backend: LinuxBackend) -> None:
    assert backend.ping("10.77.0.53", "dns").ok
    assert not backend.ping("10.77.0.99", "custom", timeout_s=1).ok
    assert backend.addresses() == [("mgmt0", "10.77.0.10")]
    assert [n.name for n in backend.list_nics()] == ["mgmt0"]
    assert backend.default_gateways() == ["10.77.0.1"]
