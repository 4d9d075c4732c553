"""VM devices after creation: add or remove disks and NICs, insert or eject the ISO in the CD-ROM.

Every change is made in two places: the VM's persistent definition (its inactive XML, edited with
ElementTree and defined again — one atomic step that every libvirt driver supports), then, for a
running VM, the live domain (attach, detach or update with ``AFFECT_LIVE``). When the live step is
refused (a SATA disk cannot be hot-plugged, the guest did not release a device) the change stays
saved for the next start, and ``applied`` in the answer says ``"next_start"`` instead of ``"now"``.

Invariants: all checks come first (the VM exists, is persistent and not busy; the volume exists,
is free to use under the one-writer rule of :class:`~qx_node.vms.VmService`; the device exists)
and run under ``VmService._mutate`` with the change, so two requests cannot both take one volume.
A new disk's volume is created last before the definition and deleted again if defining fails.
Removing a disk keeps its volume unless ``remove_volume`` is asked, which needs the VM shut off
(a running guest may still write to it) and a volume no other VM uses.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import libvirt

from qx_common import log
from qx_node.domxml import _dev_name
from qx_node.errors import Conflict, InvalidField, NotFound
from qx_node.libvirt_conn import mapped
from qx_node.storage import GiB
from qx_node.vms import VmService
from qx_node.vmspec import (BRIDGE_RE, DISK_KEYS, MAC_RE, NAME_RE, VM_SPEC_SCHEMA, VOLUME_RE, DiskSpec, _obj, _str,
                            parse_disk)

_log = log.get("node.devices")
_PREFIX = {"virtio": "vd", "sata": "sd", "scsi": "sd"}
DISK_DEV_RE = r"^(vd|sd)[a-z]{1,2}$"

DISK_SCHEMA: dict[str, Any] = VM_SPEC_SCHEMA["properties"]["disks"]["items"]
NIC_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    "properties": {"bridge": {"type": "string", "pattern": BRIDGE_RE.pattern},
                   "network": {"type": "string", "pattern": NAME_RE.pattern,
                               "description": "a libvirt network (GET /v1/networks) instead of a bridge"},
                   "model": {"enum": ["virtio", "e1000"], "default": "virtio"},
                   "mac": {"type": "string", "pattern": MAC_RE.pattern}}}
CDROM_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["volume"], "additionalProperties": False,
    "properties": {"volume": {"type": "string", "pattern": VOLUME_RE.pattern,
                              "description": "an ISO volume in the pool"}}}


@dataclass(frozen=True)
class NicRequest:
    bridge: str | None
    network: str | None
    model: str
    mac: str | None


def parse_nic(body: Any) -> NicRequest:
    d = _obj(body, "", {"bridge", "network", "model", "mac"})
    if ("bridge" in d) == ("network" in d):
        raise InvalidField("body: give exactly one of bridge (a host bridge) or network (a libvirt network)",
                           field="bridge", hint='for example {"bridge": "br0"}')
    bridge = _str(d, "bridge", "", pattern=BRIDGE_RE, hint="a host bridge, for example br0")
    network = _str(d, "network", "", pattern=NAME_RE, hint="a network from GET /v1/networks")
    model = _str(d, "model", "", choices=("virtio", "e1000"), default="virtio") or "virtio"
    mac = _str(d, "mac", "")
    if mac is not None:
        mac = mac.lower()
        if not MAC_RE.fullmatch(mac) or int(mac[:2], 16) & 1:
            raise InvalidField(f"mac: '{mac[:20]}' is not a unicast MAC address", field="mac",
                               hint="six hex pairs, for example 52:54:00:12:34:56")
    return NicRequest(bridge, network, model, mac)


def parse_cdrom(body: Any) -> str:
    d = _obj(body, "", {"volume"})
    vol = _str(d, "volume", "", pattern=VOLUME_RE, required=True, hint="an ISO volume in the pool")
    assert vol is not None
    return vol


def new_mac() -> str:
    """A random MAC in QEMU's locally administered range (52:54:00), so the API can name it at once."""
    return "52:54:00:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))


def _disks(root: ET.Element) -> Iterator[ET.Element]:
    yield from root.findall("devices/disk")


def _target(el: ET.Element) -> str:
    t = el.find("target")
    return t.get("dev", "") if t is not None else ""


def _source(el: ET.Element) -> str | None:
    s = el.find("source")
    return s.get("file") if s is not None else None


def _mac(el: ET.Element) -> str:
    m = el.find("mac")
    return (m.get("address", "") if m is not None else "").lower()


class DeviceService:
    def __init__(self, vms: VmService) -> None:
        self.vms = vms

    # -- the two-step change -------------------------------------------------------------------
    def _open(self, name: str) -> tuple[libvirt.virDomain, ET.Element, ET.Element | None]:
        """(domain, its persistent definition, its live XML when running)."""
        dom = self.vms._dom(name)
        self.vms._not_busy(name)
        with mapped(f"VM '{name}'"):
            if not dom.isPersistent():
                raise Conflict(f"VM '{name}' is transient (not defined in libvirt) and cannot be edited")
            cfg = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
            live = ET.fromstring(dom.XMLDesc(0)) if dom.isActive() else None
        return dom, cfg, live

    def _define(self, name: str, cfg: ET.Element) -> None:
        with mapped(f"VM '{name}'"):
            self.vms.lv.conn().defineXML(ET.tostring(cfg, encoding="unicode"))

    @staticmethod
    def _live(dom: libvirt.virDomain, op: str, xml: str) -> str:
        """Apply to the running VM: "now", or "next_start" when libvirt/QEMU/the guest refuses."""
        fn = {"attach": dom.attachDeviceFlags, "detach": dom.detachDeviceFlags, "update": dom.updateDeviceFlags}[op]
        try:
            fn(xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        except libvirt.libvirtError as e:
            _log.info("devices: %s on running %s refused (%s): at the next start", op, dom.name(),
                      e.get_error_message())
            return "next_start"
        return "now"

    def _answer(self, name: str, what: str, applied: str, device: str) -> dict[str, Any]:
        _log.info("devices: %s of %s %s (%s)", what, name, device, applied)
        return {**self.vms.get(name), "applied": {what: applied}, "device": device}

    # -- disks ---------------------------------------------------------------------------------------
    def add_disk(self, name: str, spec: DiskSpec) -> dict[str, Any]:
        vms = self.vms
        with vms._mutate:
            dom, cfg, live = self._open(name)
            if len([d for d in _disks(cfg) if d.get("device", "disk") == "disk"]) >= 16:
                raise Conflict(f"VM '{name}' has 16 disks already", hint="remove one first")
            path = None
            if spec.volume:
                vol = vms.storage.resolve(spec.volume, "volume")
                if spec.shared and vol.format != "raw":
                    raise InvalidField(f"shared: volume '{vol.name}' is {vol.format}; only raw volumes can be shared",
                                       field="shared", hint="create the shared volume with format raw")
                vms._check_free([("volume", vol.path, "disk", spec.shared)])
                path, fmt = vol.path, vol.format
            else:
                assert spec.size_gib is not None
                vms.check_disk_space(spec.size_gib * GiB, "size_gib")
            used = {_target(d) for root in (cfg, live) if root is not None for d in _disks(root)}
            prefix = _PREFIX[spec.bus]
            dev = next(_dev_name(prefix, i) for i in range(64) if _dev_name(prefix, i) not in used)
            created = None
            if path is None:
                vol_name = next(f"{name}-disk{i}.qcow2" for i in range(64)
                                if not os.path.lexists(vms.storage.pool_dir / f"{name}-disk{i}.qcow2")
                                and not any(os.path.basename(_source(d) or "") == f"{name}-disk{i}.qcow2"
                                            for d in _disks(cfg)))
                vol = vms.storage.create(vol_name, (spec.size_gib or 1) * GiB, "qcow2", field="size_gib")
                created, path, fmt = vol.name, vol.path, "qcow2"
            el = ET.Element("disk", type="file", device="disk")
            ET.SubElement(el, "driver", name="qemu", type=fmt if fmt in ("qcow2", "raw") else "raw",
                          cache="none", discard="unmap")
            ET.SubElement(el, "source", file=path)
            ET.SubElement(el, "target", dev=dev, bus=spec.bus)
            if spec.shared:
                ET.SubElement(el, "shareable")
            devices = cfg.find("devices")
            assert devices is not None
            devices.append(el)
            try:
                self._define(name, cfg)
            except BaseException:
                if created:
                    with contextlib.suppress(Exception):
                        vms.storage.delete(created)
                raise
            applied = self._live(dom, "attach", ET.tostring(el, encoding="unicode")) if live is not None else "now"
        return self._answer(name, "disks", applied, dev)

    def remove_disk(self, name: str, dev: str, remove_volume: bool = False) -> dict[str, Any]:
        vms = self.vms
        with vms._mutate:
            dom, cfg, live = self._open(name)
            devices = cfg.find("devices")
            assert devices is not None
            el = next((d for d in _disks(cfg) if _target(d) == dev and d.get("device", "disk") == "disk"), None)
            live_el = next((d for d in _disks(live) if _target(d) == dev), None) if live is not None else None
            if el is None and live_el is None:
                raise NotFound(f"VM '{name}' has no disk '{dev}'", field="dev", hint=f"GET /v1/vms/{name} lists its disks")
            path = _source(el if el is not None else live_el)  # type: ignore[arg-type]
            if remove_volume:
                if live is not None:
                    raise Conflict(f"remove_volume: VM '{name}' is running; its guest may still write to {dev}",
                                   field="remove_volume", hint="shut the VM off first, or keep the volume")
                if not path or os.path.dirname(os.path.realpath(path)) != os.path.realpath(vms.storage.pool_dir):
                    raise Conflict(f"remove_volume: disk {dev} is not a volume of the pool", field="remove_volume")
                others = [u for u in vms.attachments(exclude=dom.UUIDString()).get(os.path.realpath(path), [])]
                if others:
                    raise Conflict(f"remove_volume: the volume is also used by VM(s) "
                                   f"{', '.join(sorted({u.vm for u in others}))}", field="remove_volume",
                                   hint="keep the volume (remove_volume=false)")
            if el is not None:
                devices.remove(el)
                self._define(name, cfg)
            applied = "now"
            if live_el is not None:
                applied = self._live(dom, "detach", ET.tostring(live_el, encoding="unicode"))
            if remove_volume and path:
                vms.storage.delete(os.path.basename(path))
        return self._answer(name, "disks", applied, dev)

    # -- NICs ------------------------------------------------------------------------------------
    def add_nic(self, name: str, req: NicRequest) -> dict[str, Any]:
        vms = self.vms
        with vms._mutate:
            dom, cfg, live = self._open(name)
            if len(cfg.findall("devices/interface")) >= 8:
                raise Conflict(f"VM '{name}' has 8 NICs already", hint="remove one first")
            if req.network is not None:
                with mapped(f"network '{req.network}'"):
                    try:
                        vms.lv.conn().networkLookupByName(req.network)
                    except libvirt.libvirtError as e:
                        raise NotFound(f"network: '{req.network}' does not exist", field="network",
                                       hint="GET /v1/networks lists them") from e
            mac = req.mac or new_mac()
            taken = {_mac(i) for root in (cfg, live) if root is not None for i in root.findall("devices/interface")}
            if mac in taken:
                raise Conflict(f"mac: VM '{name}' has a NIC with {mac} already", field="mac")
            if req.network is not None:
                el = ET.Element("interface", type="network")
                ET.SubElement(el, "source", network=req.network)
            else:
                el = ET.Element("interface", type="bridge")
                ET.SubElement(el, "source", bridge=req.bridge or "")
            ET.SubElement(el, "mac", address=mac)
            ET.SubElement(el, "model", type=req.model)
            devices = cfg.find("devices")
            assert devices is not None
            devices.append(el)
            self._define(name, cfg)
            applied = self._live(dom, "attach", ET.tostring(el, encoding="unicode")) if live is not None else "now"
        return self._answer(name, "nics", applied, mac)

    def remove_nic(self, name: str, mac: str) -> dict[str, Any]:
        vms = self.vms
        mac = mac.lower()
        with vms._mutate:
            dom, cfg, live = self._open(name)
            el = next((i for i in cfg.findall("devices/interface") if _mac(i) == mac), None)
            live_el = (next((i for i in live.findall("devices/interface") if _mac(i) == mac), None)
                       if live is not None else None)
            if el is None and live_el is None:
                raise NotFound(f"VM '{name}' has no NIC {mac}", field="mac", hint=f"GET /v1/vms/{name} lists its NICs")
            if el is not None:
                devices = cfg.find("devices")
                assert devices is not None
                devices.remove(el)
                self._define(name, cfg)
            applied = self._live(dom, "detach", ET.tostring(live_el, encoding="unicode")) if live_el is not None else "now"
        return self._answer(name, "nics", applied, mac)

    # -- CD-ROM --------------------------------------------------------------------------------------
    def insert(self, name: str, volume: str) -> dict[str, Any]:
        return self._media(name, volume)

    def eject(self, name: str) -> dict[str, Any]:
        return self._media(name, None)

    def _media(self, name: str, volume: str | None) -> dict[str, Any]:
        vms = self.vms
        with vms._mutate:
            dom, cfg, live = self._open(name)
            path = None
            if volume is not None:
                path = vms.storage.path_of(volume, "volume")
                vms._check_free([("volume", path, "cdrom", False)])
            el = next((d for d in _disks(cfg) if d.get("device") == "cdrom"), None)
            if el is None:
                if volume is None:
                    raise Conflict(f"VM '{name}' has no CD-ROM drive", hint="insert an ISO to add one")
                used = {_target(d) for root in (cfg, live) if root is not None for d in _disks(root)}
                dev = next(_dev_name("sd", i) for i in range(64) if _dev_name("sd", i) not in used)
                el = ET.Element("disk", type="file", device="cdrom")
                ET.SubElement(el, "driver", name="qemu", type="raw")
                ET.SubElement(el, "target", dev=dev, bus="sata")
                ET.SubElement(el, "readonly")
                devices = cfg.find("devices")
                assert devices is not None
                devices.append(el)
                added = True
            else:
                added = False
            dev = _target(el)
            src = el.find("source")
            if src is not None:
                el.remove(src)
            if path is not None:
                src = ET.Element("source", file=path)
                el.insert(1, src)
            self._define(name, cfg)
            if live is None:
                applied = "now"
            elif added:
                applied = "next_start"  # a new SATA drive cannot be hot-plugged
            else:
                live_el = next((d for d in _disks(live) if _target(d) == dev), None)
                applied = "next_start"
                if live_el is not None:
                    lsrc = live_el.find("source")
                    if lsrc is not None:
                        live_el.remove(lsrc)
                    if path is not None:
                        live_el.insert(1, ET.Element("source", file=path))
                    applied = self._live(dom, "update", ET.tostring(live_el, encoding="unicode"))
        return self._answer(name, "cdrom", applied, dev)


def parse_disk_body(body: Any) -> DiskSpec:
    d = _obj(body, "", DISK_KEYS)
    if ("size_gib" in d) == ("volume" in d):
        raise InvalidField("body: give exactly one of size_gib (a new qcow2 volume) or volume (an existing one)",
                           field="size_gib", hint='for example {"size_gib": 20}')
    if d.get("shared") is True and "volume" not in d:
        raise InvalidField("shared: is for an existing raw volume", field="shared",
                           hint="create a raw volume (POST /v1/storage/volumes), then attach it with volume and shared")
    return parse_disk(d, "")
