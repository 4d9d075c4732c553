"""The disks of this machine, as the installer shows them, and choosing one by an answer file's filter.

Sources, all read-only: ``lsblk --json --bytes`` (the disks, their partitions, size, model, serial,
transport, flags), ``/dev/disk/by-id`` (stable names), sysfs (partition numbers, model/serial/transport
where udev is absent), ``blkid -p`` (filesystem type and labels when lsblk has no udev data), ``sfdisk
--json`` (GPT partition names of a disk that may hold Quantix), ``/proc/self/mountinfo``.

Invariants:

* Nothing here writes to a disk. The only side effect is :func:`existing_install` mounting the data
  partition read-only (ext4 with ``noload``: no journal replay) in a private temporary directory, and it
  always unmounts it again; a partition already mounted somewhere is read where it is. The ESP is read
  with mtools, never mounted.
* Reading an existing install never raises: what cannot be read shows as ``"?"``.
* :func:`select` never guesses: exactly one usable disk matching every key of the filter, or a
  :class:`~qx_common.errors.UserError` that lists every disk and why it matched or not.
* Without udev (no ``/dev/disk/by-id``) everything still works: ``by_id`` is empty and
  :attr:`Disk.stable_path` falls back to the kernel path.

Call order: :func:`find_boot_medium` → :func:`list_disks` (calls :func:`existing_install` for disks whose
GPT has the Quantix labels) → :func:`select` (unattended) or the operator's choice (interactive).
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qx_common import log
from qx_common import run as r
from qx_common.errors import ExternalError, QxError, UserError
from qx_install.answer import DiskFilter, format_size
from qx_update import FatFiles, read_boot_entries

BY_ID = Path("/dev/disk/by-id")
BY_LABEL = Path("/dev/disk/by-label")
MEDIA_MOUNT = Path("/run/quantix/media")
# The installation medium's filesystem label: the ISO's volume id (qx_build.iso.VOLUME_ID; a test keeps
# the two equal — the installer does not import the build driver).
BOOT_LABELS = ("QUANTIX_OS",)
QUANTIX_LABELS = {"esp": "esp", "a": "root-a", "b": "root-b", "data": "quantix-data"}  # role -> GPT name
INSTALL_MARKER = "lib/quantix/install.json"     # on the data partition (= /var of the installed host)
HOSTNAME_FILE = "lib/quantix/config/hostname"
TRANSPORT_NAMES = {"ata": "sata", "spi": "scsi", "fc": "scsi", "iscsi": "scsi", "srp": "scsi"}
_SKIP_NAMES = re.compile(r"^(loop|zram|ram|sr|fd)\d|^mmcblk\d+(boot\d+|rpmb)$")
_READ_LIMIT = 64 * 1024   # the files read from an existing install are tiny; a corrupt one must not be huge
_PRINTABLE = re.compile(r"^[\x21-\x7e][\x20-\x7e]{0,127}$")

_log = log.get("install.disks")


@dataclass(frozen=True)
class Partition:
    path: str          # /dev/nvme0n1p1
    number: int        # 0 when unknown
    size: int          # bytes
    fstype: str        # "" when unformatted or unknown
    label: str         # filesystem label
    partlabel: str     # GPT partition name


@dataclass(frozen=True)
class ExistingInstall:
    """A Quantix install found on a disk. Fields that could not be read are ``"?"``."""

    version: str                # the version the disk boots by default ("?" unknown)
    hostname: str
    complete: bool              # False: an install was interrupted (install.json "installing") or unreadable
    default_slot: str           # "a" | "b" | "" (no boot entry) | "?" (ESP unreadable)
    slots: dict[str, str] = field(default_factory=dict)  # slot -> version of its boot entry

    def describe(self) -> str:
        state = "" if self.complete else ", incomplete"
        return f"Quantix OS {self.version} ({self.hostname}{state})"


@dataclass(frozen=True)
class Disk:
    path: str                        # /dev/nvme0n1
    name: str                        # nvme0n1
    by_id: tuple[str, ...]           # names in /dev/disk/by-id (most readable first); () without udev
    model: str
    serial: str
    size: int                        # bytes
    transport: str                   # nvme, sata, sas, usb, virtio, scsi, loop, mmc, ... or ""
    removable: bool
    read_only: bool
    partitions: tuple[Partition, ...]
    quantix: ExistingInstall | None
    boot_medium: bool
    unusable: str                    # why it cannot be chosen, or ""

    @property
    def stable_path(self) -> str:
        """The path to show and to record: the first by-id link, else the kernel path."""
        return str(BY_ID / self.by_id[0]) if self.by_id else self.path

    @property
    def by_id_paths(self) -> tuple[str, ...]:
        return tuple(str(BY_ID / n) for n in self.by_id)

    def describe(self) -> str:
        """One line: ``/dev/disk/by-id/nvme-X  Samsung SSD 980  serial S4EW  1.0 TB  nvme  Quantix OS 1.2 (h1)``."""
        parts = [self.stable_path]
        if self.stable_path != self.path:
            parts.append(f"({self.name})")
        parts += [self.model or "(no model)", f"serial {self.serial}" if self.serial else "(no serial)",
                  format_size(self.size), self.transport or "?"]
        if self.removable:
            parts.append("removable")
        if self.quantix:
            parts.append(self.quantix.describe())
        elif self.partitions:
            parts.append(f"{len(self.partitions)} partition(s)")
        if self.unusable:
            parts.append(f"- cannot be used: {self.unusable}")
        return "  ".join(parts)


# ---------------------------------------------------------------------------------------------
# Listing.


def list_disks(*, min_bytes: int, boot_medium: Iterable[str] = (), include: Iterable[str] = ()) -> list[Disk]:
    """Every whole disk of this machine, sorted by path, each with why it cannot be chosen (if so).

    Loop, zram, ram, floppy and optical devices are skipped unless their path is in ``include`` (tests and
    image-based provisioning use loop devices).
    """
    boot = {os.path.realpath(p) for p in boot_medium}
    wanted = {os.path.realpath(p) for p in include}
    out = r.run(["lsblk", "--json", "--bytes", "--tree", "-o",
                 "NAME,KNAME,PATH,TYPE,SIZE,MODEL,SERIAL,TRAN,RM,RO,FSTYPE,LABEL,PARTLABEL"]).stdout
    try:
        devices = json.loads(out).get("blockdevices") or []
    except (ValueError, AttributeError) as e:
        raise ExternalError("lsblk printed something that is not its JSON") from e
    by_id = _by_id_names()
    in_use = _in_use()
    disks = []
    for dev in devices:
        path = dev.get("path") or f"/dev/{dev.get('name', '')}"
        name = dev.get("kname") or dev.get("name") or os.path.basename(path)
        real = os.path.realpath(path)
        if real not in wanted and (dev.get("type") not in ("disk",) or _SKIP_NAMES.match(name)):
            continue
        disks.append(_disk(dev, path, name, by_id.get(real, ()), real in boot, in_use, min_bytes))
    return sorted(disks, key=lambda d: d.path)


def _disk(dev: dict[str, Any], path: str, name: str, by_id: tuple[str, ...], boot: bool,
          in_use: dict[str, str], min_bytes: int) -> Disk:
    sysfs = Path("/sys/class/block") / name
    size = _int(dev.get("size"))
    parts = tuple(_partition(c) for c in dev.get("children") or [] if c.get("type") == "part")
    read_only = _flag(dev.get("ro"))
    quantix = None
    if {p.partlabel for p in parts} >= set(QUANTIX_LABELS.values()):
        quantix = existing_install(path)
    used = next((f"{dev_} is {what}" for dev_, what in in_use.items()
                 if dev_ in {name, *(os.path.basename(p.path) for p in parts)}), "")
    if boot:
        unusable = "it is the installation medium"
    elif read_only:
        unusable = "it is read-only"
    elif used:
        unusable = f"it is in use ({used})"
    elif size < min_bytes:
        have, need = format_size(size), format_size(min_bytes)
        if have == need:  # 6.05 GB vs 6.08 GB would both read "6.1 GB"
            have, need = f"{size:,} bytes", f"{min_bytes:,} bytes"
        unusable = f"is {have}; Quantix needs at least {need}"
    else:
        unusable = ""
    return Disk(path=path, name=name, by_id=by_id,
                model=_clean(dev.get("model")) or _sysfs_text(sysfs / "device/model"),
                serial=(_clean(dev.get("serial")) or _sysfs_text(sysfs / "serial")
                        or _sysfs_text(sysfs / "device/serial")),
                size=size, transport=_transport(dev.get("tran"), name, sysfs), removable=_flag(dev.get("rm")),
                read_only=read_only, partitions=parts, quantix=quantix, boot_medium=boot, unusable=unusable)


def _partition(c: dict[str, Any]) -> Partition:
    name = c.get("kname") or c.get("name") or ""
    path = c.get("path") or f"/dev/{name}"
    fstype, label, partlabel = _clean(c.get("fstype")), _clean(c.get("label")), _clean(c.get("partlabel"))
    number = _int(_sysfs_text(Path("/sys/class/block") / name / "partition"))
    if not (fstype and partlabel):
        # lsblk takes these from udev's database; where udev does not run (the installer's own
        # environment may not, nor may a build host) probe the partition directly.
        probe = _blkid_probe(path)
        fstype = fstype or probe.get("TYPE", "")
        label = label or probe.get("LABEL", "")
        partlabel = partlabel or probe.get("PART_ENTRY_NAME", "")
        number = number or _int(probe.get("PART_ENTRY_NUMBER"))
    return Partition(path=path, number=number, size=_int(c.get("size")), fstype=fstype, label=label,
                     partlabel=partlabel)


def _blkid_probe(dev: str) -> dict[str, str]:
    try:
        res = r.run(["blkid", "-p", "-o", "export", dev], check=False, timeout=30)
    except QxError as e:  # blkid missing or hanging: show the partition without these details
        _log.debug("blkid -p %s: %s", dev, e)
        return {}
    return dict(line.split("=", 1) for line in res.stdout.splitlines() if "=" in line) if res.returncode == 0 else {}


def _by_id_names() -> dict[str, tuple[str, ...]]:
    """Whole-disk device -> its /dev/disk/by-id names, the most readable first (vendor names before
    wwn-/eui. numbers). Links to partitions resolve to partition devices and so never match a disk."""
    found: dict[str, list[str]] = {}
    try:
        entries = list(BY_ID.iterdir())
    except OSError:
        return {}
    for link in entries:
        found.setdefault(os.path.realpath(link), []).append(link.name)

    def rank(n: str) -> tuple[int, str]:
        if n.startswith(("wwn-", "nvme-eui.", "nvme-nvme.")) or re.match(r"^scsi-[0-9]", n):
            return (2, n)
        return (1 if n.startswith("scsi-") else 0, n)

    return {dev: tuple(sorted(names, key=rank)) for dev, names in found.items()}


def _in_use() -> dict[str, str]:
    """Kernel device name -> what uses it: mounted filesystems, active swap, device-mapper/md holders."""
    used: dict[str, str] = {}
    try:
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            left, sep, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            if not sep or len(fields) < 5 or len(rfields) < 2:
                continue
            name = _devname(fields[2])
            if name:
                used.setdefault(name, f"mounted at {_unescape(fields[4])}")
    except OSError:
        pass
    with contextlib.suppress(OSError):
        for line in Path("/proc/swaps").read_text().splitlines()[1:]:
            if line.split():
                used.setdefault(os.path.basename(os.path.realpath(line.split()[0])), "used as swap")
    with contextlib.suppress(OSError):
        for holders in Path("/sys/class/block").glob("*/holders"):
            names = sorted(h.name for h in holders.iterdir())
            if names:
                used.setdefault(holders.parent.name, f"held by {', '.join(names)}")
    return used


def _devname(majmin: str) -> str:
    """``8:1`` -> ``sda1`` through sysfs ("" for filesystems without a block device)."""
    if not re.match(r"^\d+:\d+$", majmin) or majmin.startswith("0:"):
        return ""
    try:
        return os.path.basename(os.path.realpath(f"/sys/dev/block/{majmin}"))
    except OSError:
        return ""


def _transport(tran: object, name: str, sysfs: Path) -> str:
    t = _clean(tran).lower()
    if t:
        return TRANSPORT_NAMES.get(t, t)
    if name.startswith("nvme"):
        return "nvme"
    if name.startswith("loop"):
        return "loop"
    if name.startswith("mmcblk"):
        return "mmc"
    # lsblk reports no transport for virtio disks (vda, and sdX behind virtio-scsi): the device path says.
    with contextlib.suppress(OSError):
        if "/virtio" in os.path.realpath(sysfs):
            return "virtio"
    return ""


# ---------------------------------------------------------------------------------------------
# The installation medium.


def find_boot_medium(*, media_mount: Path = MEDIA_MOUNT) -> set[str]:
    """The whole-disk device(s) holding the installation medium: a filesystem labelled like the ISO
    (:data:`BOOT_LABELS`), or whatever is mounted at ``media_mount``. Empty when none is found."""
    found: set[str] = set()
    for label in BOOT_LABELS:
        link = BY_LABEL / label
        if link.exists():
            found.add(os.path.realpath(link))
        try:
            # -c /dev/null: the devices as they are now, never blkid's cache (see qx_install.sources).
            res = r.run(["blkid", "-c", "/dev/null", "-t", f"LABEL={label}", "-o", "device"], check=False,
                        timeout=30)
        except QxError as e:
            _log.debug("blkid -t LABEL=%s: %s", label, e)
            continue
        found.update(line.strip() for line in res.stdout.splitlines() if line.startswith("/dev/"))
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            fields = line.split()
            if len(fields) > 4 and _unescape(fields[4]) == str(media_mount) and (name := _devname(fields[2])):
                found.add(f"/dev/{name}")
    return {whole_disk(d) for d in found}


def whole_disk(dev: str) -> str:
    """``/dev/sdb2`` -> ``/dev/sdb`` (through sysfs); a whole disk or an unknown device is returned as is."""
    name = os.path.basename(os.path.realpath(dev))
    sysfs = Path("/sys/class/block") / name
    if (sysfs / "partition").exists():
        return "/dev/" + os.path.basename(os.path.dirname(os.path.realpath(sysfs)))
    return os.path.realpath(dev) if os.path.exists(dev) else dev


# ---------------------------------------------------------------------------------------------
# An existing install.


def existing_install(disk_path: str) -> ExistingInstall | None:
    """The Quantix install on ``disk_path``, or None when its GPT lacks the partitions esp, root-a,
    root-b and quantix-data. Never raises: unreadable parts give ``"?"`` fields."""
    try:
        table = json.loads(r.run(["sfdisk", "--json", disk_path], check=False, timeout=30).stdout or "{}")
        parts = {p.get("name", ""): p.get("node", "") for p in table["partitiontable"]["partitions"]}
    except (QxError, ValueError, KeyError, TypeError, AttributeError) as e:
        _log.debug("sfdisk --json %s: %s", disk_path, e)
        return None
    if not set(QUANTIX_LABELS.values()) <= set(parts):
        return None
    slots, default_slot = _read_slots(parts[QUANTIX_LABELS["esp"]])
    hostname, complete, marker_version = _read_data(parts[QUANTIX_LABELS["data"]])
    version = slots.get(default_slot) or marker_version or "?"
    return ExistingInstall(version=version, hostname=hostname, complete=complete, default_slot=default_slot,
                           slots=slots)


def _read_slots(esp: str) -> tuple[dict[str, str], str]:
    """(slot -> version, the default slot) from the ESP's boot entries; ({}, "?") when unreadable.

    The ESP is read by qx-update's own reader (:func:`qx_update.read_boot_entries`) through mtools
    (:class:`qx_update.FatFiles`), not mounted: that works where the kernel has no vfat driver (build
    hosts) and cannot leave a FAT dirty.
    """
    try:
        # FatFiles.names() cannot tell "no such directory" from "not a FAT": ask once for the root.
        r.run(["mdir", "-i", esp, "-b", "::/"], env={"MTOOLS_SKIP_CHECK": "1"}, timeout=30)
        boot = read_boot_entries(FatFiles(esp))
    except QxError as e:
        _log.debug("reading the boot entries on %s: %s", esp, e)
        return {}, "?"
    return {slot: _printable(v) for slot, v in boot.versions.items()}, boot.default_slot or ""


def _read_data(data: str) -> tuple[str, bool, str]:
    """(hostname, complete, the version install.json names) from the data partition; ("?", False, "")
    when unreadable. A missing install.json means complete: the install is older than the installer."""
    try:
        with mounted_ro(data, "ext4") as root:
            host_file = root / HOSTNAME_FILE
            lines = _read_text(host_file).strip().splitlines() if host_file.is_file() else []
            hostname = _printable(lines[0]) if lines else ""
            marker = root / INSTALL_MARKER
            if not marker.is_file():
                return hostname or "?", True, ""
            try:
                info = json.loads(_read_text(marker))
            except ValueError:
                return hostname or "?", False, ""
    except (QxError, OSError, UnicodeError) as e:
        _log.debug("reading the data partition %s: %s", data, e)
        return "?", False, ""
    if not isinstance(info, dict):
        return hostname or "?", False, ""
    version = info.get("version")
    return hostname or "?", info.get("state") == "complete", _printable(version) if isinstance(version, str) else ""


@contextlib.contextmanager
def mounted_ro(dev: str, fstype: str = "") -> Iterator[Path]:
    """``dev`` mounted read-only in a private temporary directory, unmounted on the way out (also when
    the body raises); if it is mounted already (the running system's own disk), its mount point."""
    existing = _mount_point_of(dev)
    if existing is not None:
        yield existing
        return
    # noload: do not replay a journal on a disk we only look at (ext3/ext4 only; others refuse it).
    opts = "ro,nosuid,nodev,noexec" + (",noload" if fstype in ("ext3", "ext4") else "")
    tmp = Path(tempfile.mkdtemp(prefix="qx-disk-"))    # mode 0700
    try:
        r.run(["mount", "-o", opts, *(["-t", fstype] if fstype else []), dev, tmp], timeout=60)
        try:
            yield tmp
        finally:
            try:
                r.run(["umount", tmp], timeout=60)
            except QxError as e:
                _log.warning("could not unmount %s (%s); detaching it lazily", tmp, e)
                r.run(["umount", "-l", tmp], check=False, timeout=60)
    finally:
        with contextlib.suppress(OSError):
            tmp.rmdir()


def _mount_point_of(dev: str) -> Path | None:
    try:
        rdev = os.stat(dev).st_rdev
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    want = f"{os.major(rdev)}:{os.minor(rdev)}"
    for line in lines:
        fields = line.split()
        if len(fields) > 4 and fields[2] == want and fields[3] == "/":
            return Path(_unescape(fields[4]))
    return None


def _read_text(path: Path) -> str:
    with path.open("rb") as f:
        return f.read(_READ_LIMIT).decode("utf-8")


# ---------------------------------------------------------------------------------------------
# Choosing a disk by a filter.


def match(disk: Disk, filt: DiskFilter) -> list[tuple[str, bool]]:
    """Each key of ``filt`` with whether ``disk`` satisfies it, as ``(explanation, ok)``.

    ``by_id`` globs match any of the disk's by-id names; ``model`` and ``serial`` match exactly or as
    globs, ignoring case and surrounding blanks (lsblk pads some models); sizes are inclusive.
    """
    out: list[tuple[str, bool]] = []

    def glob(value: str, pattern: str) -> bool:
        return fnmatch.fnmatchcase(value.strip().casefold(), pattern.strip().casefold())

    if filt.by_id:
        hit = next((n for n in disk.by_id if fnmatch.fnmatchcase(n, filt.by_id)), None)
        out.append((f"by-id {hit} matches '{filt.by_id}'" if hit else
                    f"no by-id name matches '{filt.by_id}'" if disk.by_id else "has no /dev/disk/by-id name",
                    hit is not None))
    if filt.model:
        ok = glob(disk.model, filt.model)
        out.append((f"model '{disk.model}' {'matches' if ok else 'does not match'} '{filt.model}'", ok))
    if filt.serial:
        ok = glob(disk.serial, filt.serial)
        out.append((f"serial '{disk.serial}' {'matches' if ok else 'does not match'} '{filt.serial}'", ok))
    if filt.min_size is not None:
        ok = disk.size >= filt.min_size
        out.append((f"size {format_size(disk.size)} {'>=' if ok else '<'} min_size {format_size(filt.min_size)}",
                    ok))
    if filt.max_size is not None:
        ok = disk.size <= filt.max_size
        out.append((f"size {format_size(disk.size)} {'<=' if ok else '>'} max_size {format_size(filt.max_size)}",
                    ok))
    if filt.transport:
        ok = disk.transport == filt.transport
        out.append((f"transport {disk.transport or '?'} {'is' if ok else 'is not'} {filt.transport}", ok))
    return out


def select(disks: list[Disk], filt: DiskFilter) -> Disk:
    """The one usable disk that matches every key of ``filt``; else a UserError listing all disks."""
    if filt.empty:
        raise UserError("install.disk: the disk filter is empty",
                        hint="name the disk by by_id, model, serial, min_size, max_size or transport")
    results = [(d, match(d, filt)) for d in disks]
    matching = [d for d, m in results if all(ok for _, ok in m)]
    usable = [d for d in matching if not d.unusable]
    if len(usable) == 1:
        return usable[0]
    lines = []
    for d, m in results:
        all_ok = all(ok for _, ok in m)
        # A matching disk shows why it matched; another shows only what did not match.
        verdict = ("matches: " if all_ok else "does not match: ") + "; ".join(t for t, ok in m if all_ok or not ok)
        if all_ok and d.unusable:
            verdict += f"; but cannot be used: {d.unusable}"
        lines.append(f"  {d.stable_path}  {d.model or '(no model)'}  serial {d.serial or '?'}  "
                     f"{format_size(d.size)}  {d.transport or '?'}: {verdict}")
    listing = "\n".join(lines) or "  (this machine has no disks the installer can see)"
    if not usable:
        why = " (the matching disks cannot be used)" if matching else ""
        raise UserError(f"install.disk ({filt.describe()}) matches no usable disk{why}; the disks:\n{listing}",
                        hint="change [install.disk] so that it names the target disk (`qx-install disks` lists them)")
    raise UserError(f"install.disk ({filt.describe()}) matches {len(usable)} usable disks; the installer never "
                    f"guesses:\n{listing}",
                    hint="narrow [install.disk], e.g. by serial or by_id, so that it names exactly one disk")


# ---------------------------------------------------------------------------------------------
# Small helpers.


def _clean(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""


def _flag(value: object) -> bool:
    """lsblk prints booleans as true/false (2.37+) or "0"/"1" (older)."""
    return value is True or value in ("1", 1)


def _int(value: object) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return 0


def _sysfs_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()[:256]
    except OSError:
        return ""


def _printable(text: str) -> str:
    """A value read from a disk, fit for a screen: printable ASCII, at most 128 characters, else "?"."""
    text = text.strip()
    return text if _PRINTABLE.match(text) else "?"


def _unescape(path: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (\\040)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), path)
