"""Networks for VMs on the real server (uvicorn, TLS) and test:///default: the host side is a real
bridge with a port, made in a network namespace of the test's own (its sysfs read through
``/proc/<pid>/root``); libvirt networks are created on it, VMs get NICs on them, and a network in
use cannot be deleted.

VLAN networks go through the console's real program (qx_console.vmnet) on a host root under tmp with
``--files-only``: the host configuration and its networkd files are checked, not their bring-up (this
kernel has no 8021q, and networkd does not run here)."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import libvirt
import pytest

from qx_common import hostpaths
from qx_console import networkd
from qx_console.hostconfig import HostConfig, IPv4Config, NetworkConfig
from qx_console.store import ConfigStore, snapshot_dir
from qx_node.networks import vlans
from tests.node.conftest import LiveServer, make_settings

pytestmark = pytest.mark.skipif(not shutil.which("unshare") or not shutil.which("ip"),
                                reason="needs unshare and ip (util-linux, iproute2)")


@pytest.fixture
def netns(tmp_path: Path) -> Iterator[Path]:
    """A network namespace with bridge br7 (port v0); yields its /sys/class/net as seen from here."""
    mnt = tmp_path / "sys"
    mnt.mkdir()
    script = (f"mount -t sysfs none {mnt} && ip link add br7 type bridge && ip link add v0 type veth peer name v1 "
              "&& ip link set v0 master br7 && echo ready && exec sleep 600")
    proc = subprocess.Popen(["unshare", "--net", "--mount", "--propagation", "private", "sh", "-c", script],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if line.strip() != "ready":
            pytest.fail(f"could not make the test's network namespace: {proc.stderr.read() if proc.stderr else ''}")
        yield Path(f"/proc/{proc.pid}/root{mnt}/class/net")
    finally:
        proc.kill()
        proc.wait(10)


@pytest.fixture
def client(netns: Path, tmp_path: Path) -> Iterator[httpx.Client]:
    with LiveServer(make_settings(tmp_path, net_dir=netns, vlan_config=tmp_path / "no-8021q")) as live:
        ctx = ssl.create_default_context(cafile=str(live.cert))
        with httpx.Client(base_url=live.url, verify=ctx, headers=live.auth, timeout=30) as c:
            yield c


def test_host_bridges_listed_networks_created_and_used_by_vms(client: httpx.Client) -> None:
    body = client.get("/v1/networks").json()
    assert body["host"] == [{"name": "br7", "kind": "bridge", "mac": body["host"][0]["mac"], "up": False,
                             "ports": ["v0"]}]  # lo and the veth pair are not networks
    assert "default" in [n["name"] for n in body["networks"]]  # the test driver's own

    r = client.post("/v1/networks", json={"name": "lan", "bridge": "br7"})
    assert r.status_code == 201 and r.headers["location"] == "/v1/networks/lan", r.text
    assert r.json() | {"uuid": ""} == {"name": "lan", "uuid": "", "forward": "bridge", "bridge": "br7",
                                       "interface": None, "active": True, "autostart": True, "vlan": None}
    conn = libvirt.open("test:///default")
    try:
        net = conn.networkLookupByName("lan")
        assert net.isActive() and net.autostart() and net.bridgeName() == "br7"
    finally:
        conn.close()
    for bad, status, field in (({"name": "lan", "bridge": "br7"}, 409, "name"), ({"name": "x", "bridge": "br9"}, 422, "bridge"),
                               ({"name": "x", "bridge": "br7", "interface": "v1"}, 422, "bridge"), ({"name": "x"}, 422, "bridge"),
                               ({"name": "x", "interface": "lo"}, 422, "interface"),
                               ({"name": "x", "interface": "br7"}, 422, "interface")):
        r = client.post("/v1/networks", json=bad)
        assert r.status_code == status and r.json()["field"] == field, (bad, r.text)
    # macvtap on a host interface (a VLAN interface on a real host; a veth here).
    r = client.post("/v1/networks", json={"name": "direct", "interface": "v1"})
    assert r.status_code == 201 and r.json()["interface"] == "v1" and r.json()["bridge"] is None

    # VMs on it: at creation, and a NIC added later.
    r = client.post("/v1/vms?wait=true", json={"name": "n1", "memory_mib": 64, "nics": [{"network": "lan"}]})
    assert r.status_code == 201 and r.json()["nics"][0]["network"] == "lan", r.text
    r = client.post("/v1/vms?wait=true", json={"name": "n2", "memory_mib": 64, "nics": [{"network": "nowhere"}]})
    assert r.status_code == 404 and r.json()["field"] == "nics[0].network"
    r = client.post("/v1/vms?wait=true", json={"name": "n2", "memory_mib": 64, "nics": [{"network": "lan", "bridge": "br7"}]})
    assert r.status_code == 422 and r.json()["field"] == "nics[0].network"
    assert client.post("/v1/vms?wait=true", json={"name": "n2", "memory_mib": 64, "start": False}).status_code == 201
    r = client.post("/v1/vms/n2/nics", json={"network": "direct"})
    assert r.status_code == 200 and r.json()["nics"][0]["network"] == "direct"
    assert client.post("/v1/vms/n2/nics", json={"network": "nowhere"}).status_code == 404

    r = client.delete("/v1/networks/lan")
    assert r.status_code == 409 and "n1" in r.json()["error"]
    assert client.delete("/v1/vms/n1", params={"force": "true"}).status_code == 200
    assert client.delete("/v1/networks/lan").json() == {"name": "lan", "deleted": True}
    assert client.get("/v1/networks/lan").status_code == 404
    assert "lan" not in [n["name"] for n in client.get("/v1/networks").json()["networks"]]


def test_vlan_ids_and_parents_come_from_8021q(tmp_path: Path) -> None:
    # The format of /proc/net/vlan/config (this kernel has no 8021q to make a real one).
    cfg = tmp_path / "config"
    cfg.write_text("VLAN Dev name    | VLAN ID\nName-Type: VLAN_NAME_TYPE_RAW_PLUS_VID_NO_PAD\n"
                   "eth0.10        | 10  | eth0\nmgmt           | 300  | bond0\n")
    assert vlans(cfg) == {"eth0.10": (10, "eth0"), "mgmt": (300, "bond0")}
    assert vlans(tmp_path / "absent") == {}


def test_vlan_networks_through_the_host_network_configuration(client: httpx.Client, tmp_path: Path) -> None:
    store = ConfigStore(tmp_path / "hostroot")
    # No management adapter chosen (the factory default): the host cannot carry a VLAN, nothing is made.
    r = client.post("/v1/networks", json={"name": "v20", "vlan": 20})
    assert r.status_code == 409 and r.json()["field"] == "vlan" and "management adapter" in r.json()["error"], r.text
    assert client.get("/v1/networks/v20").status_code == 404 and not store.config_file.exists()
    for bad in (0, 4095, "20", True, None, 2**70):
        r = client.post("/v1/networks", json={"name": "bad", "vlan": bad})
        assert r.status_code == 422 and r.json()["field"] == "vlan", (bad, r.text)
    r = client.post("/v1/networks", json={"name": "bad", "vlan": 20, "bridge": "br7"})
    assert r.status_code == 422 and r.json()["field"] == "bridge", r.text

    net = NetworkConfig(nic="eno1", ipv4=IPv4Config("static", "192.0.2.10", 24, "192.0.2.1"), dns=("192.0.2.53",))
    store.save(HostConfig(hostname="h1", network=net), "test", ())
    r = client.post("/v1/networks", json={"name": "v20", "vlan": 20})
    assert r.status_code == 201, r.text
    assert r.json() | {"uuid": ""} == {"name": "v20", "uuid": "", "forward": "bridge", "bridge": "qxbr20",
                                       "interface": None, "active": True, "autostart": True, "vlan": 20}
    # The host configuration has it, and its networkd files are exactly the console's rendering of it.
    cfg = store.load()
    assert cfg.network.vm_vlans == (20,) and cfg.network.ipv4 == net.ipv4
    assert snapshot_dir(store.network_dir) == networkd.render(cfg.network)
    assert "VLAN=qxvlan20\n" in snapshot_dir(store.network_dir)["10-quantix-mgmt.network"]
    assert store.has_previous()  # written as every network change is: the previous one kept

    r = client.post("/v1/networks", json={"name": "v20b", "vlan": 20})
    assert r.status_code == 409 and r.json()["field"] == "vlan" and "'v20'" in r.json()["error"], r.text
    # Two clients adding VLANs at once: both land (one read-modify-write of the configuration at a time).
    answers: list[int] = []
    ctx = ssl.create_default_context(cafile=str(hostpaths.node_cert(tmp_path / "state")))

    def add(vid: int) -> None:
        with httpx.Client(base_url=str(client.base_url), verify=ctx, headers=dict(client.headers), timeout=60) as c:
            answers.append(c.post("/v1/networks", json={"name": f"v{vid}", "vlan": vid}).status_code)
    threads = [threading.Thread(target=add, args=(vid,)) for vid in (21, 22, 23)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert answers == [201, 201, 201] and store.load().network.vm_vlans == (20, 21, 22, 23)

    # A VM on it keeps it; deleting the network takes the VLAN off the host again.
    assert client.post("/v1/vms?wait=true", json={"name": "vv", "memory_mib": 64, "nics": [{"network": "v20"}]}).status_code == 201
    r = client.delete("/v1/networks/v20")
    assert r.status_code == 409 and "vv" in r.json()["error"]
    assert store.load().network.vm_vlans == (20, 21, 22, 23)
    assert client.delete("/v1/vms/vv", params={"force": "true"}).status_code == 200
    for vid in (20, 21, 22, 23):
        assert client.delete(f"/v1/networks/v{vid}").status_code == 200
    assert store.load().network.vm_vlans == ()
    assert snapshot_dir(store.network_dir) == networkd.render(net)
    assert json.loads(store.config_file.read_text())["network"]["vm_vlans"] == []

    # A stored configuration the console's program cannot read: 502 with its reason, nothing changed.
    store.config_file.write_text('{"network": {"nic": "eno1", "vm_vlans": [')
    r = client.post("/v1/networks", json={"name": "v30", "vlan": 30})
    assert r.status_code == 502 and "cannot be read" in r.json()["error"], r.text
    assert client.get("/v1/networks/v30").status_code == 404
    assert store.config_file.read_text() == '{"network": {"nic": "eno1", "vm_vlans": ['


def test_vlan_networks_are_host_changes_refused_in_lockdown(tmp_path: Path) -> None:
    lock = tmp_path / "lockdown"
    lock.write_text("")
    with LiveServer(make_settings(tmp_path), customize=lambda app: setattr(app.state, "lockdown_file", lock)) as live:
        ctx = ssl.create_default_context(cafile=str(live.cert))
        with httpx.Client(base_url=live.url, verify=ctx, headers=live.auth, timeout=30) as c:
            r = c.post("/v1/networks", json={"name": "v20", "vlan": 20})
            assert r.status_code == 423 and r.json()["field"] == "vlan" and "lockdown" in r.json()["error"], r.text
            assert not (tmp_path / "hostroot").exists()  # the console's program never ran
