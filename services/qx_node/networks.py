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

* ``vlan``: a VLAN of the management adapter (or team) for VMs. The host side — a VLAN device
  ``qxvlanN`` on the carrier and a bridge ``qxbrN`` without host addresses — belongs to the host's
  network configuration (persistent systemd-networkd files, the console's one renderer and its safe
  apply): this module runs the console's program for it (``Settings.host_vlan_cmd``, qx_console.vmnet
  ``add N``; run, not imported: the node may not import the console), then defines the libvirt network
  ``<forward mode='bridge'/><bridge name='qxbrN'/>`` on that bridge. (libvirt tags VLANs itself only for
  Open vSwitch and SR-IOV networks, neither of which a Quantix host has; a Linux bridge's VLAN filtering
  would need every VM tap's VLAN set after libvirt made it, leaving it on the untagged management VLAN
  until then.) Deleting the last network on a VLAN removes the VLAN from the host (``remove N``) first.

A network is defined, started and set to autostart, all or nothing (a VLAN added for it is removed
again when libvirt refuses). One that a VM's NIC names cannot be deleted. Changes of the host's VLANs
are serialized (one read-modify-write of the host configuration at a time).
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt

from qx_common import log
from qx_common.run import run
from qx_node.errors import BackendError, Conflict, InvalidField, NotFound
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
        "vlan": {"type": "integer", "minimum": 1, "maximum": 4094,
                 "description": "a VLAN of the management adapter: the host gets bridge qxbr<vlan> for it"},
    },
}
VLAN_BRIDGE_RE = re.compile(r"qxbr([1-9][0-9]{0,3})")  # the console's NetworkConfig.vm_vlan_bridge


@dataclass(frozen=True)
class NetworkRequest:
    name: str
    bridge: str | None
    interface: str | None
    vlan: int | None = None


def parse_network(body: Any) -> NetworkRequest:
    d = _obj(body, "", {"name", "bridge", "interface", "vlan"})
    name = _str(d, "name", "", required=True, hint='for example "lan"')
    assert name is not None
    valid_vm_name(name)
    if sum(k in d for k in ("bridge", "interface", "vlan")) != 1:
        raise InvalidField("body: give exactly one of bridge (a host bridge), interface (a host interface, "
                           "for example a VLAN interface) or vlan (a VLAN id of the management adapter)",
                           field="bridge", hint="GET /v1/networks lists the host's")
    bridge = _str(d, "bridge", "", pattern=BRIDGE_RE, hint="a host bridge, for example br0")
    iface = _str(d, "interface", "", pattern=BRIDGE_RE, hint="a host interface, for example eth0.10")
    vlan = d.get("vlan")
    if "vlan" in d and (not isinstance(vlan, int) or isinstance(vlan, bool) or not 1 <= vlan <= 4094):
        raise InvalidField("vlan: must be a VLAN id from 1 to 4094", field="vlan", hint="for example 20")
    return NetworkRequest(name, bridge, iface, vlan)


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
    def __init__(self, lv: Libvirt, net_dir: Path = DEFAULT_NET_DIR, vlan_config: Path = DEFAULT_VLAN_CONFIG,
                 host_vlan_cmd: tuple[str, ...] = ()) -> None:
        self.lv = lv
        self.net_dir = net_dir
        self.vlan_config = vlan_config
        self.host_vlan_cmd = host_vlan_cmd
        self._host_lock = threading.Lock()  # one change of the host's VLANs (and networks on them) at a time

    def _host_vlan(self, action: str, vid: int) -> dict[str, Any]:
        """Add or remove VM VLAN ``vid`` on the host (the console's program; see the module doc)."""
        if not self.host_vlan_cmd:
            raise BackendError("vlan: this qx-node has no command for the host's VLANs",
                               hint="run qx-node on a Quantix OS host")
        p = run([*self.host_vlan_cmd, action, str(vid)], check=False, timeout=120)
        # The program's own "error: ..." line (its hint follows on the next line).
        lines = [ln.split(": ", 1)[-1] for ln in p.stderr.splitlines() if ": error: " in ln or ": hint: " in ln]
        detail = "; ".join(lines) or p.stderr.strip()[-300:] or f"exit code {p.returncode}"
        if p.returncode == 2:  # the host configuration refuses it (no management adapter chosen, ...)
            raise Conflict(f"vlan: the host cannot offer VLAN {vid}: {detail}", field="vlan",
                           hint="the management network is configured at the host's console (F2 > Network)")
        if p.returncode != 0:  # 4: applying it failed and the previous configuration is back
            raise BackendError(f"vlan: changing the host's VLAN {vid} failed: {detail}",
                               hint="the host's network configuration is as it was before")
        try:
            return dict(json.loads(p.stdout.strip().splitlines()[-1]))
        except (ValueError, IndexError) as e:
            raise BackendError(f"vlan: the host's VLAN program answered no result ({p.stdout[-200:]!r})") from e

    @staticmethod
    def _describe(net: libvirt.virNetwork) -> dict[str, Any]:
        root = ET.fromstring(net.XMLDesc(0))
        fwd = root.find("forward")
        iface = fwd.find("interface") if fwd is not None else None
        return {"name": net.name(), "uuid": net.UUIDString(),
                "forward": fwd.get("mode", "nat") if fwd is not None else "none",
                "bridge": (root.find("bridge").get("name") if root.find("bridge") is not None else None),  # type: ignore[union-attr]
                "interface": iface.get("dev") if iface is not None else None,
                "active": bool(net.isActive()), "autostart": bool(net.autostart()),
                "vlan": NetworkService.vlan_of(root.find("bridge").get("name") if root.find("bridge") is not None  # type: ignore[union-attr]
                                               else None)}

    @staticmethod
    def vlan_of(bridge: str | None) -> int | None:
        """The VM VLAN a bridge serves (qxbrN), else None."""
        m = VLAN_BRIDGE_RE.fullmatch(bridge or "")
        return int(m.group(1)) if m else None

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
        if req.vlan is None:
            return self._create(req)
        with self._host_lock:
            return self._create(req)

    def _create(self, req: NetworkRequest) -> dict[str, Any]:
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
        bridge, added = req.bridge, False
        if req.vlan is not None:
            with mapped("networks"):
                same = [n["name"] for n in (self._describe(x) for x in conn.listAllNetworks(0))
                        if self.vlan_of(n["bridge"]) == req.vlan]
            if same:
                raise Conflict(f"vlan: VLAN {req.vlan} has a network already: '{same[0]}'", field="vlan",
                               hint=f"give VMs a NIC on network '{same[0]}'")
            answer = self._host_vlan("add", req.vlan)
            bridge, added, field, dev = answer["bridge"], bool(answer["changed"]), "vlan", str(req.vlan)
        root = ET.Element("network")
        ET.SubElement(root, "name").text = req.name
        fwd = ET.SubElement(root, "forward", mode="bridge")
        if bridge:
            ET.SubElement(root, "bridge", name=bridge)
        else:
            ET.SubElement(fwd, "interface", dev=req.interface or "")
        net = None
        try:
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
        except BaseException:
            if added and req.vlan is not None:  # all or nothing: the host's VLAN goes again
                try:
                    self._host_vlan("remove", req.vlan)
                except Exception as e:  # noqa: BLE001 - the libvirt failure is the one to report
                    _log.error("networks: VLAN %s stays on the host after a failed create: %s", req.vlan, e)
            raise
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
        with mapped(f"network '{name}'"):
            vlan = self.vlan_of(self._describe(net)["bridge"])
        if vlan is None:
            return self._delete(name, net, None)
        with self._host_lock:
            return self._delete(name, net, vlan)

    def _delete(self, name: str, net: libvirt.virNetwork, vlan: int | None) -> dict[str, Any]:
        used_by = self.users(name)
        if used_by:
            raise Conflict(f"network '{name}' is used by VM(s) {', '.join(used_by)}",
                           hint="remove their NICs on it first (DELETE /v1/vms/{vm}/nics/{mac})")
        if vlan is not None:  # the host's VLAN first: if that fails, nothing has changed
            self._host_vlan("remove", vlan)
        with mapped(f"network '{name}'"):
            if net.isActive():
                net.destroy()
            net.undefine()
        _log.info("networks: deleted %s", name)
        return {"name": name, "deleted": True}
