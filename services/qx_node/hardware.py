"""Hardware inventory (``GET /v1/hardware``): disks, NICs and PCI devices with IOMMU groups.

Read from udev (pyudev, i.e. sysfs + the udev database) and netifaces; nothing is cached, the
inventory is cheap (a few ms) and must reflect hot-plugs. Missing udev properties (no udevd
running, containers) degrade to empty strings, never to an error.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import netifaces
import pyudev

_SKIP_DISKS = ("loop", "ram", "zram", "dm-", "sr", "nbd")


def _prop(dev: pyudev.Device, key: str) -> str:
    try:
        return str(dev.properties.get(key, ""))
    except (KeyError, UnicodeDecodeError):
        return ""


def _attr(dev: pyudev.Device, key: str) -> str:
    try:
        v = dev.attributes.get(key)
    except (KeyError, OSError):
        return ""
    return v.decode(errors="replace").strip() if isinstance(v, bytes) else ""


def disks(ctx: pyudev.Context) -> list[dict[str, Any]]:
    out = []
    for d in ctx.list_devices(subsystem="block", DEVTYPE="disk"):
        if d.sys_name.startswith(_SKIP_DISKS):
            continue
        sectors = _attr(d, "size")
        out.append({
            "name": d.sys_name,
            "path": d.device_node or f"/dev/{d.sys_name}",
            "size_bytes": int(sectors) * 512 if sectors.isdigit() else 0,
            "model": _prop(d, "ID_MODEL") or _attr(d, "device/model"),
            "serial": _prop(d, "ID_SERIAL_SHORT") or _prop(d, "ID_SERIAL"),
            "rotational": _attr(d, "queue/rotational") == "1",
            "removable": _attr(d, "removable") == "1",
            "bus": _prop(d, "ID_BUS"),
            "wwn": _prop(d, "ID_WWN"),
        })
    return sorted(out, key=lambda x: x["name"])


def nics() -> list[dict[str, Any]]:
    out = []
    for name in sorted(netifaces.interfaces()):
        sys = Path("/sys/class/net") / name
        addrs = netifaces.ifaddresses(name)

        def read(attr: str, sys: Path = sys) -> str:
            try:
                return (sys / attr).read_text().strip()
            except OSError:
                return ""

        speed = read("speed")
        out.append({
            "name": name,
            "mac": (addrs.get(netifaces.AF_LINK) or [{}])[0].get("addr", ""),
            "ipv4": [a["addr"] for a in addrs.get(netifaces.AF_INET, []) if "addr" in a],
            "ipv6": [a["addr"].split("%")[0] for a in addrs.get(netifaces.AF_INET6, []) if "addr" in a],
            "state": read("operstate"),
            "mtu": int(read("mtu") or 0),
            "speed_mbps": int(speed) if speed.lstrip("-").isdigit() and int(speed) > 0 else None,
            "physical": (sys / "device").exists(),
            "bridge": (sys / "bridge").exists(),
            "driver": os.path.basename(os.readlink(sys / "device/driver")) if (sys / "device/driver").exists() else "",
        })
    return out


def pci(ctx: pyudev.Context) -> list[dict[str, Any]]:
    out = []
    for d in ctx.list_devices(subsystem="pci"):
        sysp = Path(d.sys_path)
        group = sysp / "iommu_group"
        driver = sysp / "driver"
        out.append({
            "address": d.sys_name,
            "vendor_id": _attr(d, "vendor").removeprefix("0x"),
            "device_id": _attr(d, "device").removeprefix("0x"),
            "class": _attr(d, "class").removeprefix("0x"),
            "vendor": _prop(d, "ID_VENDOR_FROM_DATABASE"),
            "device": _prop(d, "ID_MODEL_FROM_DATABASE"),
            "driver": os.path.basename(os.readlink(driver)) if driver.exists() else None,
            "iommu_group": int(os.path.basename(os.readlink(group))) if group.exists() else None,
        })
    return sorted(out, key=lambda x: x["address"])


def inventory() -> dict[str, Any]:
    ctx = pyudev.Context()
    return {"disks": disks(ctx), "nics": nics(), "pci": pci(ctx),
            "iommu": any(Path("/sys/kernel/iommu_groups").glob("*"))}
