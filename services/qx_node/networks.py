"""Networks VMs can use: the host's bridges and VLAN interfaces, and libvirt networks over them.

``host_interfaces(net_dir, vlan_config)`` reads ``/sys/class/net`` (a bridge has a ``bridge/``
directory, its ports under ``brif/``; a VLAN interface says ``DEVTYPE=vlan`` in ``uevent``) and
``/proc/net/vlan/config`` for VLAN ids and parents. Tests point both at another network namespace
(``/proc/<pid>/root/...``, ``/proc/<pid>/net/vlan/config``).

``NetworkService`` lists, creates and deletes libvirt networks of two kinds — no NAT, no DHCP: the
host's own network configuration stays the one source of addresses:

* ``bridge``: ``<forward mode='bridge'/><bridge name=.../>`` — VMs join an existing host bridge
  (the management bridge, or a bridge on a VLAN);
* ``direct``: ``<forward mode='bridge'><interface dev=.../></forward>`` — VMs get macvtap devices
  on a host interface, typically a VLAN interface such as ``eth0.10`` (no bridge needed; the host
  itself cannot talk to these VMs over it, which is macvtap's nature).

A network is defined, started and set to autostart, all or nothing. One that a VM's NIC names
cannot be deleted. Creating host bridges or VLAN interfaces themselves is the host network
configuration's job (systemd-networkd), not this module's.
"""

from __future__ import annotations

import contextlib
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt

from qx_common import log
from qx_node.errors import Conflict, InvalidField, NotFound
from qx_node.libvirt_conn import Libvirt, mapped
from qx_node.vmspec import BRIDGE_RE, NAME_RE, _obj, _str, valid_vm_name

_log = log.get("node.networks")
DEFAULT_NET_DIR = Path("/sys/class/net")
DEFAULT_VLAN_CONFIG = Path("/proc/net/vlan/config")

NETWORK_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["name"], "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": NAME_RE.pattern},
        "bridge": {"type": "string", "pattern": BRIDGE_RE.pattern, "description": "an existing host bridge"},
        "interface": {"type": "string", "pattern": BRIDGE_RE.pattern,
                      "description": "a host interface (a VLAN interface such as eth0.10) for macvtap"},
    },
}


@dataclass(frozen=True)
class NetworkRequest:
    name: str
    bridge: str | None
    interface: str | None


def parse_network(body: Any) -> NetworkRequest:
    d = _obj(body, "", {"name", "bridge", "interface"})
    name = _str(d, "name", "", required=True, hint='for example "lan"')
    assert name is not None
    valid_vm_name(name)
    if ("bridge" in d) == ("interface" in d):
        raise InvalidField("body: give exactly one of bridge (a host bridge) or interface (a host interface, "
                           "for example a VLAN)", field="bridge", hint="GET /v1/networks lists the host's")
    bridge = _str(d, "bridge", "", pattern=BRIDGE_RE, hint="a host bridge, for example br0")
    iface = _str(d, "interface", "", pattern=BRIDGE_RE, hint="a host interface, for example eth0.10")
    return NetworkRequest(name, bridge, iface)


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def vlans(vlan_config: Path) -> dict[str, tuple[int, str]]:
    """VLAN interface -> (VLAN id, parent), from /proc/net/vlan/config ("eth0.10 | 10 | eth0")."""
    out: dict[str, tuple[int, str]] = {}
    for line in _read(vlan_config).splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 3 and parts[1].isdigit():
            out[parts[0]] = (int(parts[1]), parts[2])
    return out


def host_interfaces(net_dir: Path = DEFAULT_NET_DIR, vlan_config: Path = DEFAULT_VLAN_CONFIG) -> list[dict[str, Any]]:
    """The host's bridges and VLAN interfaces (what a VM network can be built on), by name."""
    vl = vlans(vlan_config)
    out = []
    try:
        names = sorted(p.name for p in net_dir.iterdir())
    except OSError:
        return []
    for name in names:
        d = net_dir / name
        uevent = dict(line.split("=", 1) for line in _read(d / "uevent").splitlines() if "=" in line)
        kind = "bridge" if (d / "bridge").is_dir() else "vlan" if uevent.get("DEVTYPE") == "vlan" or name in vl else None
        if kind is None:
            continue
        entry: dict[str, Any] = {"name": name, "kind": kind, "mac": _read(d / "address"),
                                 "up": _read(d / "operstate") in ("up", "unknown")}
        if kind == "bridge":
            with contextlib.suppress(OSError):
                entry["ports"] = sorted(p.name for p in (d / "brif").iterdir())
            entry.setdefault("ports", [])
        else:
            vid, parent = vl.get(name, (None, None))
            if vid is None:  # 8021q's proc file unreadable: the conventional name says it
                m = re.fullmatch(r"(.+)\.(\d+)", name)
                vid, parent = (int(m.group(2)), m.group(1)) if m else (None, None)
            entry.update(vlan_id=vid, parent=parent)
        out.append(entry)
    return out


class NetworkService:
    def __init__(self, lv: Libvirt, net_dir: Path = DEFAULT_NET_DIR, vlan_config: Path = DEFAULT_VLAN_CONFIG) -> None:
        self.lv = lv
        self.net_dir = net_dir
        self.vlan_config = vlan_config

    @staticmethod
    def _describe(net: libvirt.virNetwork) -> dict[str, Any]:
        root = ET.fromstring(net.XMLDesc(0))
        fwd = root.find("forward")
        iface = fwd.find("interface") if fwd is not None else None
        return {"name": net.name(), "uuid": net.UUIDString(),
                "forward": fwd.get("mode", "nat") if fwd is not None else "none",
                "bridge": (root.find("bridge").get("name") if root.find("bridge") is not None else None),  # type: ignore[union-attr]
                "interface": iface.get("dev") if iface is not None else None,
                "active": bool(net.isActive()), "autostart": bool(net.autostart())}

    def list(self) -> dict[str, Any]:
        with mapped("networks"):
            nets = [self._describe(n) for n in self.lv.conn().listAllNetworks(0)]
        return {"host": host_interfaces(self.net_dir, self.vlan_config),
                "networks": sorted(nets, key=lambda n: n["name"])}

    def _net(self, name: str) -> libvirt.virNetwork:
        valid_vm_name(name)
        try:
            return self.lv.conn().networkLookupByName(name)
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
                raise NotFound(f"network '{name}' does not exist", hint="GET /v1/networks lists them") from e
            with mapped(f"network '{name}'"):
                raise

    def get(self, name: str) -> dict[str, Any]:
        net = self._net(name)
        with mapped(f"network '{name}'"):
            return self._describe(net)

    def create(self, req: NetworkRequest) -> dict[str, Any]:
        conn = self.lv.conn()
        try:
            conn.networkLookupByName(req.name)
        except libvirt.libvirtError:
            pass
        else:
            raise Conflict(f"name: network '{req.name}' already exists", field="name", hint="choose another name")
        host = {i["name"]: i for i in host_interfaces(self.net_dir, self.vlan_config)}
        field, dev = ("bridge", req.bridge) if req.bridge else ("interface", req.interface)
        if req.bridge and host.get(req.bridge, {}).get("kind") != "bridge":
            raise InvalidField(f"bridge: the host has no bridge '{req.bridge}'", field="bridge",
                               hint="GET /v1/networks lists the host's bridges (kind bridge)")
        if req.interface and (req.interface == "lo" or req.interface in host and host[req.interface]["kind"] == "bridge"
                              or not (self.net_dir / req.interface).exists()):
            raise InvalidField(f"interface: '{req.interface}' is not a host interface VMs can use", field="interface",
                               hint="a NIC or VLAN interface (GET /v1/networks lists VLANs); for a bridge give bridge")
        root = ET.Element("network")
        ET.SubElement(root, "name").text = req.name
        fwd = ET.SubElement(root, "forward", mode="bridge")
        if req.bridge:
            ET.SubElement(root, "bridge", name=req.bridge)
        else:
            ET.SubElement(fwd, "interface", dev=req.interface or "")
        net = None
        with mapped(f"network '{req.name}'"):
            try:
                net = conn.networkDefineXML(ET.tostring(root, encoding="unicode"))
                net.create()
                net.setAutostart(1)
            except BaseException:
                if net is not None:
                    with contextlib.suppress(libvirt.libvirtError):
                        if net.isActive():
                            net.destroy()
                        net.undefine()
                raise
            out = self._describe(net)
        _log.info("networks: created %s on %s %s", req.name, field, dev)
        return out

    def users(self, name: str) -> list[str]:
        """VMs with a NIC on network ``name`` (live or next-boot configuration)."""
        with mapped("VM list"):
            doms = self.lv.conn().listAllDomains(0)
        out = set()
        for d in doms:
            with contextlib.suppress(libvirt.libvirtError):
                xmls = [d.XMLDesc(0)] + ([d.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)] if d.isActive() else [])
                for xml in xmls:
                    if any(s.get("network") == name for s in ET.fromstring(xml).findall("devices/interface/source")):
                        out.add(d.name())
        return sorted(out)

    def delete(self, name: str) -> dict[str, Any]:
        net = self._net(name)
        used_by = self.users(name)
        if used_by:
            raise Conflict(f"network '{name}' is used by VM(s) {', '.join(used_by)}",
                           hint="remove their NICs on it first (DELETE /v1/vms/{vm}/nics/{mac})")
        with mapped(f"network '{name}'"):
            if net.isActive():
                net.destroy()
            net.undefine()
        _log.info("networks: deleted %s", name)
        return {"name": name, "deleted": True}
