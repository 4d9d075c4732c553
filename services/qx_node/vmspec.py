"""The validated description of a VM, parsed from an API body.

``parse_vm_spec(body)`` is the only constructor used by the API: it accepts any JSON value and
either returns a :class:`VmSpec` whose every field is in range, or raises
:class:`~qx_node.errors.InvalidField` naming the first wrong field (``disks[1].size_gib``) and how
to fix it. Unknown keys are refused too (a typo must not be silently ignored). Names are restricted
to a safe alphabet, so they can never escape the storage pool directory; the domain XML is built
with ElementTree from these values (never by string formatting), so no value can inject XML.
Patterns are applied with ``fullmatch`` (``re``'s ``$`` also matches before a final newline, so
``"web\n"`` would pass a ``match``); the ``^…$`` forms are the OpenAPI/JSON-Schema patterns.
One spec may not name a volume twice (a disk twice, or a disk that is also its cdrom, kernel or
initrd); sharing a volume between VMs is declared per disk with ``"shared": true`` (raw volumes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from qx_node.errors import InvalidField, printable

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
VOLUME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,126}$")
BRIDGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")  # IFNAMSIZ - 1
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")

MAX_VCPUS = 256
MAX_MEMORY_MIB = 4 * 1024 * 1024
MAX_DISK_GIB = 64 * 1024
MAX_DISKS = 16
MAX_NICS = 8


@dataclass(frozen=True)
class DiskSpec:
    """Exactly one of ``size_gib`` (a new qcow2 volume) and ``volume`` (an existing one) is set."""

    size_gib: int | None
    volume: str | None
    bus: str = "virtio"
    shared: bool = False  # <shareable/>: the volume may be attached to other VMs that declare it too


@dataclass(frozen=True)
class NicSpec:
    bridge: str  # "" when on a libvirt network
    model: str = "virtio"
    mac: str | None = None
    network: str | None = None  # a libvirt network (GET /v1/networks) instead of a host bridge


@dataclass(frozen=True)
class VmSpec:
    name: str
    vcpus: int
    memory_mib: int
    firmware: str = "bios"
    disks: tuple[DiskSpec, ...] = ()
    nics: tuple[NicSpec, ...] = ()
    cdrom: str | None = None
    boot: str = "disk"
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None
    autostart: bool = False
    restart_on_crash: bool = False
    start: bool = True


def _bad(path: str, message: str, hint: str | None = None) -> InvalidField:
    return InvalidField(f"{path}: {message}", field=path, hint=hint)


def _obj(value: Any, path: str, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(path or "body", "must be a JSON object")
    for key in value:
        if key not in allowed:
            shown = str(key) if key else '""'  # an empty key must still be named
            where = f"{path}.{shown}" if path else shown
            raise _bad(where, "unknown field", hint="allowed: " + ", ".join(sorted(allowed)))
    return value


def _int(d: dict[str, Any], key: str, path: str, lo: int, hi: int, default: int | None = None) -> int:
    where = f"{path}.{key}" if path else key
    if key not in d:
        if default is None:
            raise _bad(where, "is required", hint=f"an integer from {lo} to {hi}")
        return default
    v = d[key]
    # bool is an int subclass in Python; JSON true is not a count.
    if not isinstance(v, int) or isinstance(v, bool):
        raise _bad(where, "must be an integer", hint=f"an integer from {lo} to {hi}")
    if not lo <= v <= hi:
        raise _bad(where, f"{v} is out of range", hint=f"an integer from {lo} to {hi}")
    return v


def _bool(d: dict[str, Any], key: str, path: str, default: bool) -> bool:
    if key not in d:
        return default
    if not isinstance(d[key], bool):
        raise _bad(f"{path}.{key}" if path else key, "must be true or false")
    return d[key]


def _str(d: dict[str, Any], key: str, path: str, *, pattern: re.Pattern[str] | None = None,
         choices: tuple[str, ...] | None = None, default: str | None = None, required: bool = False,
         hint: str | None = None) -> str | None:
    where = f"{path}.{key}" if path else key
    if key not in d or d[key] is None:
        if required:
            raise _bad(where, "is required", hint=hint)
        return default
    v = d[key]
    if not isinstance(v, str):
        raise _bad(where, "must be a string", hint=hint)
    if choices is not None and v not in choices:
        raise _bad(where, f"'{_short(v)}' is not one of {', '.join(choices)}", hint=hint)
    if pattern is not None and not pattern.fullmatch(v):
        raise _bad(where, f"'{_short(v)}' is not a valid name", hint=hint)
    return v


def _short(v: str) -> str:
    return printable(v, 40)


def valid_volume_name(name: str, field_name: str = "name") -> str:
    if not isinstance(name, str) or not VOLUME_RE.fullmatch(name):
        raise _bad(field_name, f"'{_short(str(name))}' is not a valid volume name",
                   hint="1-127 characters: letters, digits, '_', '.', '+', '-'; not starting with '.' or '-'")
    return name


def valid_vm_name(name: str, field_name: str = "name") -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise _bad(field_name, f"'{_short(str(name))}' is not a valid VM name",
                   hint="1-63 characters: letters, digits, '_', '.', '-'; starting with a letter or digit")
    return name


_VOL_HINT = "the name of a volume in the storage pool (GET /v1/storage/volumes)"
_TOP = {"name", "vcpus", "memory_mib", "firmware", "disks", "nics", "cdrom", "boot", "kernel", "initrd",
        "cmdline", "autostart", "restart_on_crash", "start"}


DISK_KEYS = {"size_gib", "volume", "bus", "shared"}


def parse_disk(rd: Any, p: str) -> DiskSpec:
    dd = _obj(rd, p, DISK_KEYS)
    if ("size_gib" in dd) == ("volume" in dd):
        raise _bad(p, "give exactly one of size_gib (new qcow2 volume) or volume (existing volume)")
    size = _int(dd, "size_gib", p, 1, MAX_DISK_GIB) if "size_gib" in dd else None
    vol = _str(dd, "volume", p, pattern=VOLUME_RE, hint=_VOL_HINT)
    bus = _str(dd, "bus", p, choices=("virtio", "sata", "scsi"), default="virtio")
    shared = _bool(dd, "shared", p, False)
    if shared and vol is None:
        raise _bad(f"{p}.shared", "is for an existing raw volume",
                   hint="create a raw volume (POST /v1/storage/volumes), then attach it with volume and shared")
    return DiskSpec(size_gib=size, volume=vol, bus=bus or "virtio", shared=shared)


def parse_vm_spec(body: Any) -> VmSpec:
    d = _obj(body, "", _TOP)
    name = _str(d, "name", "", required=True, hint="for example \"web-1\"")
    assert name is not None
    valid_vm_name(name)
    vcpus = _int(d, "vcpus", "", 1, MAX_VCPUS, default=1)
    memory = _int(d, "memory_mib", "", 16, MAX_MEMORY_MIB, default=None)
    firmware = _str(d, "firmware", "", choices=("bios", "uefi"), default="bios")

    raw_disks = d.get("disks", [])
    if not isinstance(raw_disks, list):
        raise _bad("disks", "must be a list")
    if len(raw_disks) > MAX_DISKS:
        raise _bad("disks", f"at most {MAX_DISKS} disks")
    disks = []
    for i, rd in enumerate(raw_disks):
        p = f"disks[{i}]"
        disks.append(parse_disk(rd, p))

    raw_nics = d.get("nics", [])
    if not isinstance(raw_nics, list):
        raise _bad("nics", "must be a list")
    if len(raw_nics) > MAX_NICS:
        raise _bad("nics", f"at most {MAX_NICS} NICs")
    nics = []
    for i, rn in enumerate(raw_nics):
        p = f"nics[{i}]"
        nd = _obj(rn, p, {"bridge", "model", "mac", "network"})
        network = _str(nd, "network", p, pattern=NAME_RE, hint="a libvirt network from GET /v1/networks")
        if network is not None and "bridge" in nd:
            raise _bad(f"{p}.network", "give a bridge or a network, not both")
        bridge = "" if network is not None else _str(nd, "bridge", p, pattern=BRIDGE_RE, required=True,
                                                     hint="a host bridge, for example br0 (or a network)")
        model = _str(nd, "model", p, choices=("virtio", "e1000"), default="virtio")
        mac = _str(nd, "mac", p)
        if mac is not None:
            mac = mac.lower()
            if not MAC_RE.fullmatch(mac) or int(mac[:2], 16) & 1:
                raise _bad(f"{p}.mac", f"'{_short(mac)}' is not a unicast MAC address",
                           hint="six hex pairs, for example 52:54:00:12:34:56")
        assert bridge is not None
        nics.append(NicSpec(bridge=bridge, model=model or "virtio", mac=mac, network=network))

    cdrom = _str(d, "cdrom", "", pattern=VOLUME_RE, hint="an ISO volume in the storage pool")
    kernel = _str(d, "kernel", "", pattern=VOLUME_RE, hint=_VOL_HINT)
    initrd = _str(d, "initrd", "", pattern=VOLUME_RE, hint=_VOL_HINT)
    cmdline = _str(d, "cmdline", "")
    if cmdline is not None and (len(cmdline) > 4096 or any(ord(c) < 32 or ord(c) == 127 for c in cmdline)):
        raise _bad("cmdline", "must be at most 4096 printable characters")
    if (initrd or cmdline) and not kernel:
        raise _bad("kernel", "is required when initrd or cmdline is given")
    default_boot = "cdrom" if cdrom else "disk"
    boot = _str(d, "boot", "", choices=("disk", "cdrom", "network"), default=default_boot)
    if boot == "cdrom" and not cdrom:
        raise _bad("boot", "'cdrom' needs a cdrom volume", hint="set cdrom to an ISO volume name")
    if boot == "disk" and not disks and not kernel and "boot" in d:
        raise _bad("boot", "'disk' needs at least one disk")
    named: dict[str, str] = {}
    for where, vol in [(f"disks[{i}].volume", dk.volume) for i, dk in enumerate(disks)] + [
            ("cdrom", cdrom), ("kernel", kernel), ("initrd", initrd)]:
        if vol is None:
            continue
        first = named.get(vol)
        # Read-only uses (cdrom, kernel, initrd) may name one file; a disk is written to.
        if first is not None and (where.startswith("disks") or first.startswith("disks")):
            raise _bad(where, f"volume '{vol}' is already {first} of this VM",
                       hint="a volume can be attached once per VM")
        named.setdefault(vol, where)
    return VmSpec(
        name=name, vcpus=vcpus, memory_mib=memory, firmware=firmware or "bios", disks=tuple(disks),
        nics=tuple(nics), cdrom=cdrom, boot=boot or default_boot, kernel=kernel, initrd=initrd, cmdline=cmdline,
        autostart=_bool(d, "autostart", "", False), restart_on_crash=_bool(d, "restart_on_crash", "", False),
        start=_bool(d, "start", "", True),
    )


# JSON schema of the body, for the OpenAPI document (the parser above is the authority).
VM_SPEC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "memory_mib"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": NAME_RE.pattern},
        "vcpus": {"type": "integer", "minimum": 1, "maximum": MAX_VCPUS, "default": 1},
        "memory_mib": {"type": "integer", "minimum": 16, "maximum": MAX_MEMORY_MIB},
        "firmware": {"enum": ["bios", "uefi"], "default": "bios"},
        "disks": {"type": "array", "maxItems": MAX_DISKS, "items": {
            "type": "object", "additionalProperties": False, "properties": {
                "size_gib": {"type": "integer", "minimum": 1, "maximum": MAX_DISK_GIB},
                "volume": {"type": "string", "pattern": VOLUME_RE.pattern},
                "bus": {"enum": ["virtio", "sata", "scsi"], "default": "virtio"},
                "shared": {"type": "boolean", "default": False}}}},
        "nics": {"type": "array", "maxItems": MAX_NICS, "items": {
            "type": "object", "additionalProperties": False, "properties": {
                "bridge": {"type": "string", "pattern": BRIDGE_RE.pattern},
                "network": {"type": "string", "pattern": NAME_RE.pattern,
                            "description": "a libvirt network instead of a bridge"},
                "model": {"enum": ["virtio", "e1000"], "default": "virtio"},
                "mac": {"type": "string", "pattern": MAC_RE.pattern}}}},
        "cdrom": {"type": "string", "pattern": VOLUME_RE.pattern},
        "boot": {"enum": ["disk", "cdrom", "network"]},
        "kernel": {"type": "string", "pattern": VOLUME_RE.pattern},
        "initrd": {"type": "string", "pattern": VOLUME_RE.pattern},
        "cmdline": {"type": "string", "maxLength": 4096},
        "autostart": {"type": "boolean", "default": False},
        "restart_on_crash": {"type": "boolean", "default": False},
        "start": {"type": "boolean", "default": True},
    },
}
