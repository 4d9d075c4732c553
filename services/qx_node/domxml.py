"""Domain XML from a validated :class:`~qx_node.vmspec.VmSpec`, built with ElementTree.

``build_domain_xml(spec, disk_paths, ...)`` is pure: every value goes in as element text or an
attribute, which ElementTree escapes, so nothing in a spec can add elements. Quantix-specific
settings that libvirt has no field for (restart-on-crash) live in our ``<metadata>`` namespace;
``read_metadata(xml)`` reads them back.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from qx_node.vmspec import VmSpec

QX_NS = "https://quantix-os.example/xmlns/vm/1"
ET.register_namespace("qx", QX_NS)

_DISK_PREFIX = {"virtio": "vd", "sata": "sd", "scsi": "sd"}


@dataclass(frozen=True)
class Paths:
    """Absolute paths (inside the pool) of the volumes the spec names, in spec order."""

    disks: tuple[str, ...]
    cdrom: str | None = None
    kernel: str | None = None
    initrd: str | None = None


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, {k.rstrip("_"): v for k, v in attrs.items()})
    if text is not None:
        el.text = text
    return el


def _dev_name(prefix: str, index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, r = divmod(index - 1, 26)
        letters = chr(ord("a") + r) + letters
    return prefix + letters


def build_domain_xml(spec: VmSpec, paths: Paths, virt_type: str = "kvm", arch: str = "x86_64") -> str:
    if len(paths.disks) != len(spec.disks):
        raise ValueError("one path per disk is needed")
    dom = ET.Element("domain", {"type": virt_type})
    _sub(dom, "name", spec.name)
    meta = _sub(dom, "metadata")
    ET.SubElement(meta, f"{{{QX_NS}}}vm", {
        "restart-on-crash": "yes" if spec.restart_on_crash else "no",
        "firmware": spec.firmware,
    })
    _sub(dom, "memory", str(spec.memory_mib), unit="MiB")
    _sub(dom, "vcpu", str(spec.vcpus))
    os_attrs = {"firmware": "efi"} if spec.firmware == "uefi" else {}
    os_el = _sub(dom, "os", **os_attrs)
    _sub(os_el, "type", "hvm", arch=arch, machine="q35" if virt_type in ("kvm", "qemu") else "pc")
    if spec.kernel:
        _sub(os_el, "kernel", paths.kernel)
        if spec.initrd:
            _sub(os_el, "initrd", paths.initrd)
        if spec.cmdline:
            _sub(os_el, "cmdline", spec.cmdline)
    else:
        # The chosen device first, then the others, so a VM installed from ISO boots its disk later.
        # Network boot only when asked: a PXE timeout must not delay every boot.
        order = [spec.boot] + [d for d in ("cdrom", "disk") if d != spec.boot]
        for dev in order:
            if dev == "cdrom" and not spec.cdrom or dev == "disk" and not spec.disks or dev == "network" and not spec.nics:
                continue
            _sub(os_el, "boot", dev={"disk": "hd", "cdrom": "cdrom", "network": "network"}[dev])
    feats = _sub(dom, "features")
    _sub(feats, "acpi")  # needed for a clean guest power-off (shutdown)
    _sub(feats, "apic")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "restart" if spec.restart_on_crash else "destroy")

    devs = _sub(dom, "devices")
    used: dict[str, int] = {}
    for disk, path in zip(spec.disks, paths.disks):
        prefix = _DISK_PREFIX[disk.bus]
        idx = used.get(prefix, 0)
        used[prefix] = idx + 1
        d = _sub(devs, "disk", type="file", device="disk")
        fmt = "qcow2" if path.endswith(".qcow2") else "raw"
        _sub(d, "driver", name="qemu", type=fmt, cache="none", discard="unmap")
        _sub(d, "source", file=path)
        _sub(d, "target", dev=_dev_name(prefix, idx), bus=disk.bus)
        if disk.shared:
            _sub(d, "shareable")
    if spec.cdrom:
        idx = used.get("sd", 0)
        used["sd"] = idx + 1
        d = _sub(devs, "disk", type="file", device="cdrom")
        _sub(d, "driver", name="qemu", type="raw")
        _sub(d, "source", file=paths.cdrom)
        _sub(d, "target", dev=_dev_name("sd", idx), bus="sata")
        _sub(d, "readonly")
    for nic in spec.nics:
        if nic.network:
            i = _sub(devs, "interface", type="network")
            _sub(i, "source", network=nic.network)
        else:
            i = _sub(devs, "interface", type="bridge")
            _sub(i, "source", bridge=nic.bridge)
        _sub(i, "model", type=nic.model)
        if nic.mac:
            _sub(i, "mac", address=nic.mac)
    _sub(devs, "serial", type="pty")
    _sub(devs, "console", type="pty")
    # VNC on loopback only: remote consoles go through the authenticated API / a tunnel.
    g = _sub(devs, "graphics", type="vnc", port="-1", autoport="yes", listen="127.0.0.1")
    _sub(g, "listen", type="address", address="127.0.0.1")
    return ET.tostring(dom, encoding="unicode")


@dataclass(frozen=True)
class DomainInfo:
    """What we read back from a (live or inactive) domain XML."""

    restart_on_crash: bool
    firmware: str
    disks: tuple[str, ...]
    cdroms: tuple[str, ...]
    vnc: tuple[str, int] | None
    interfaces: tuple[str, ...]
    nics: tuple[dict[str, str], ...]
    kernel: str | None = None
    initrd: str | None = None
    shareable: frozenset[str] = frozenset()  # the disks (paths) declared <shareable/>
    description: str | None = None
    tags: tuple[str, ...] = ()
    vcpus: int | None = None  # <vcpu>: the maximum (our VMs have current = maximum)
    memory_kib: int | None = None  # <memory>: the maximum
    # The disks (not CD-ROMs) with their device names, in order: what DELETE /v1/vms/{name}/disks/{dev} takes.
    disk_devices: tuple[dict[str, str], ...] = ()


_UNIT_KIB = {"b": 1 / 1024, "bytes": 1 / 1024, "k": 1, "kib": 1, "kb": 1000 / 1024, "m": 1024, "mib": 1024,
             "mb": 1000**2 / 1024, "g": 1024**2, "gib": 1024**2, "gb": 1000**3 / 1024, "t": 1024**3, "tib": 1024**3}


def _kib(el: ET.Element | None) -> int | None:
    if el is None or not (el.text or "").strip().isdigit():
        return None
    return int(int(el.text.strip()) * _UNIT_KIB.get(el.get("unit", "KiB").lower(), 1))  # type: ignore[union-attr]


def qx_metadata(restart_on_crash: bool, firmware: str, tags: tuple[str, ...] = ()) -> str:
    """Our ``<metadata>`` element, for ``setMetadata(ELEMENT, ..., "qx", QX_NS)`` (libvirt adds the namespace)."""
    el = ET.Element("vm", {"restart-on-crash": "yes" if restart_on_crash else "no", "firmware": firmware})
    for t in tags:
        ET.SubElement(el, "tag").text = t
    return ET.tostring(el, encoding="unicode")


def read_domain_xml(xml: str) -> DomainInfo:
    root = ET.fromstring(xml)
    meta = root.find(f"metadata/{{{QX_NS}}}vm")
    restart = meta is not None and meta.get("restart-on-crash") == "yes"
    firmware = meta.get("firmware", "bios") if meta is not None else (
        "uefi" if root.find("os/loader") is not None or root.find("os").get("firmware") == "efi" else "bios")  # type: ignore[union-attr]
    disks, cdroms, shareable, disk_devices = [], [], set(), []
    for d in root.findall("devices/disk"):
        src = d.find("source")
        f = src.get("file") if src is not None else None
        if not f:
            continue
        (cdroms if d.get("device") in ("cdrom", "floppy") else disks).append(f)
        target = d.find("target")
        if d.get("device", "disk") == "disk" and target is not None and target.get("dev"):
            disk_devices.append({"dev": target.get("dev", ""), "path": f, "bus": target.get("bus", "")})
        if d.find("shareable") is not None:
            shareable.add(f)
    vnc = None
    g = root.find("devices/graphics[@type='vnc']")
    if g is not None and g.get("port", "-1") not in ("-1", ""):
        vnc = (g.get("listen") or "127.0.0.1", int(g.get("port", "0")))
    ifaces, nics = [], []
    for i in root.findall("devices/interface"):
        t = i.find("target")
        if t is not None and t.get("dev"):
            ifaces.append(t.get("dev", ""))
        src = i.find("source")
        mac = i.find("mac")
        model = i.find("model")
        nics.append({"bridge": src.get("bridge", "") if src is not None else "",
                     "network": src.get("network", "") if src is not None else "",
                     "mac": mac.get("address", "") if mac is not None else "",
                     "model": model.get("type", "") if model is not None else ""})
    tags: tuple[str, ...] = ()
    if meta is not None:
        tags = tuple(t.text or "" for t in meta if t.tag in (f"{{{QX_NS}}}tag", "tag"))
    vcpu = root.findtext("vcpu")
    return DomainInfo(restart, firmware, tuple(disks), tuple(cdroms), vnc, tuple(ifaces), tuple(nics),
                      kernel=(root.findtext("os/kernel") or "").strip() or None,
                      initrd=(root.findtext("os/initrd") or "").strip() or None, shareable=frozenset(shareable),
                      description=root.findtext("description"), tags=tags,
                      vcpus=int(vcpu) if vcpu and vcpu.strip().isdigit() else None,
                      memory_kib=_kib(root.find("memory")), disk_devices=tuple(disk_devices))
