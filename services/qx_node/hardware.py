"""Hardware inventory (``GET /v1/hardware``): disks, NICs and PCI devices with IOMMU groups.

Read from udev (pyudev, i.e. sysfs + the udev database) and netifaces; nothing is cached, the
inventory is cheap (a few ms) and must reflect hot-plugs. Missing udev properties (no udevd
running, containers) degrade to empty strings, never to an error — except a partition's file
system type, label and GPT name, which are then probed with ``blkid`` (the library udev itself uses).

Each disk carries ``by_id`` (the ``/dev/disk/by-id/*`` links naming it: stable across reboots,
unlike ``sda``) and ``partitions`` (name, path, number, size, fs type, label, partlabel, by_id).
Loop, RAM, device-mapper, optical and NBD devices are not disks an operator assigns to VMs and
are left out.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import netifaces
import pyudev

from qx_common.errors import QxError
from qx_common.run import run

SKIP_DISKS = ("loop", "ram", "zram", "dm-", "sr", "nbd")  # not disks an operator would put VMs on
BY_ID_DIR = Path("/dev/disk/by-id")
_UDEV_ESCAPE = re.compile(rb"\\x([0-9a-fA-F]{2})")


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


def _sectors_to_bytes(dev: pyudev.Device) -> int:
    sectors = _attr(dev, "size")  # sysfs counts 512-byte units whatever the logical block size
    return int(sectors) * 512 if sectors.isdigit() else 0


def _unescape(value: str) -> str:
    """udev's ``\\xNN`` encoding (``ID_FS_LABEL_ENC``, ``ID_PART_ENTRY_NAME``) back to text."""
    raw = _UDEV_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), value.encode(errors="surrogateescape"))
    return raw.decode(errors="replace")


def _by_id_index(by_id_dir: Path) -> dict[str, list[str]]:
    """Device node (resolved) → the by-id links pointing at it, from one scan of ``by_id_dir``."""
    index: dict[str, list[str]] = {}
    try:
        entries = list(os.scandir(by_id_dir))
    except OSError:
        return index  # no udevd (containers, dev VMs): nobody made the links
    for e in entries:
        if e.is_symlink():
            index.setdefault(os.path.realpath(e.path), []).append(e.path)
    return index


def _by_id(dev: pyudev.Device, node: str, index: dict[str, list[str]], by_id_dir: Path) -> list[str]:
    links = set(index.get(os.path.realpath(node), []))
    try:
        # udev's own list: also right when the scan raced with a hot-plug.
        links.update(link for link in dev.device_links if os.path.dirname(link) == str(by_id_dir))
    except (KeyError, UnicodeDecodeError):
        pass
    return sorted(links)


def _blkid(node: str) -> dict[str, str]:
    """libblkid's probe of ``node`` in udev's own keys (``ID_FS_TYPE``…), or {} when it finds nothing.

    Only for devices udevd has not recorded (no udevd: containers, dev VMs). Needs read access to
    the device, i.e. root, as qx-node runs on a host.
    """
    try:
        out = run(["blkid", "-p", "-o", "udev", node], check=False, timeout=5).stdout
    except QxError:
        return {}
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _fs_props(dev: pyudev.Device, node: str) -> dict[str, str]:
    if dev.is_initialized:
        return {k: _prop(dev, k) for k in ("ID_FS_TYPE", "ID_FS_LABEL_ENC", "ID_PART_ENTRY_NAME")}
    return _blkid(node)


def _partition(p: pyudev.Device, index: dict[str, list[str]], by_id_dir: Path) -> dict[str, Any]:
    node = p.device_node or f"/dev/{p.sys_name}"
    fs = _fs_props(p, node)
    number = _prop(p, "PARTN") or _attr(p, "partition")
    return {
        "name": p.sys_name,
        "path": node,
        "number": int(number) if number.isdigit() else None,
        "size_bytes": _sectors_to_bytes(p),
        "fs_type": fs.get("ID_FS_TYPE", ""),
        "label": _unescape(fs.get("ID_FS_LABEL_ENC", "")),
        "partlabel": _unescape(fs.get("ID_PART_ENTRY_NAME", "")),
        "by_id": _by_id(p, node, index, by_id_dir),
    }


def _partitions_by_disk(ctx: pyudev.Context) -> dict[str, list[pyudev.Device]]:
    out: dict[str, list[pyudev.Device]] = {}
    for p in ctx.list_devices(subsystem="block", DEVTYPE="partition"):
        disk = os.path.basename(os.path.dirname(p.sys_path))  # sysfs nests a partition in its disk
        out.setdefault(disk, []).append(p)
    return out


def disks(ctx: pyudev.Context, *, skip: tuple[str, ...] = SKIP_DISKS,
          by_id_dir: Path = BY_ID_DIR) -> list[dict[str, Any]]:
    """Whole disks whose name does not start with one of ``skip``, each with its partitions."""
    index = _by_id_index(by_id_dir)
    parts = _partitions_by_disk(ctx)
    out = []
    for d in ctx.list_devices(subsystem="block", DEVTYPE="disk"):
        if d.sys_name.startswith(skip):
            continue
        node = d.device_node or f"/dev/{d.sys_name}"
        partitions = [_partition(p, index, by_id_dir) for p in parts.get(d.sys_name, [])]
        out.append({
            "name": d.sys_name,
            "path": node,
            "by_id": _by_id(d, node, index, by_id_dir),
            "size_bytes": _sectors_to_bytes(d),
            "model": _prop(d, "ID_MODEL") or _attr(d, "device/model"),
            "serial": _prop(d, "ID_SERIAL_SHORT") or _prop(d, "ID_SERIAL"),
            "rotational": _attr(d, "queue/rotational") == "1",
            "removable": _attr(d, "removable") == "1",
            "bus": _prop(d, "ID_BUS"),
            "wwn": _prop(d, "ID_WWN"),
            "partitions": sorted(partitions, key=lambda x: (x["number"] is None, x["number"] or 0, x["name"])),
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
