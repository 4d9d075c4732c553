"""The installation payload: what the ISO carries under ``quantix/`` to put Quantix OS on a disk.

Layout (``qx_build.installpayload`` writes it, this module reads it)::

    quantix/
        payload.json                      {"format": 1, "version", "root", "uki", "manifest",
                                           "bootloader", "data", "repart"} — file names below
        quantix-os_<v>.root.erofs.zst     the release's root payload (the same file an update downloads)
        quantix-os_<v>.efi                the release's UKI
        quantix-os_<v>.manifest.json      the release manifest (slot size and hash, kernel command line)
        systemd-bootx64.efi               the boot loader the image was built with
        data.tar.zst                      the data partition's factory tree (``/var`` of the image)
        repart.d/*.conf                   the image's own partition definitions (image/repart)
        keys/auto/{PK,KEK,db}.auth        Secure Boot enrollment files for the new ESP's loader/keys/auto
                                          ("secure_boot_keys"; optional: payloads made before signing lack it)
        SHA256SUMS                        every file above, by relative path

A release with dm-verity (:mod:`qx_common.verity`) is told by its UKI: the UKI's own command line
(its ``.cmdline`` section, the one the firmware boots under Secure Boot) names ``roothash=``
(:meth:`Payload.roothash`); its partition definitions then give each slot a ``root-<slot>-verity``
partition that the installer fills (:mod:`qx_update.seal`). A UKI without ``roothash=`` is a release
from before verity: slot A is found by ``root=PARTLABEL=root-a`` and nothing is sealed.

Invariants: :func:`open_payload` refuses a directory whose ``payload.json`` or manifest is missing or
malformed, or names a file SHA256SUMS does not list; :meth:`Payload.verify` hashes every listed file
and must pass before anything is written to a disk. The root payload is verified a second time while
it is written (``qx_update.slots.write_payload`` against the manifest's signed-at-build slot hash).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qx_common import run as r
from qx_common import verity
from qx_common.errors import EnvironmentError_, UserError
from qx_common.version import is_valid_version
from qx_update import secureboot

# systemd-boot's names for the enrollment files of one key set (ESP loader/keys/<set>/).
ENROLL_FILES = ("PK.auth", "KEK.auth", "db.auth")

FORMAT = 1
PAYLOAD_DIR = "quantix"
MEDIA_LABEL = "QUANTIX_OS"        # the ISO's volume id (qx_build.iso.VOLUME_ID)
MEDIA_MOUNT = Path("/run/quantix/media")
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGT]?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
# GPT headers, alignment and slack around the partitions (repart aligns each one to 1 MiB... or 4 KiB).
_GPT_OVERHEAD = 4 * 1024**2

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class PartitionDef:
    """One of the image's repart definitions, as far as the installer needs it."""

    file: str
    settings: tuple[tuple[str, str], ...]   # (key, value) in file order; keys may repeat

    def get(self, key: str) -> str:
        vals = [v for k, v in self.settings if k == key]
        return vals[-1] if vals else ""

    @property
    def label(self) -> str:
        return self.get("Label")

    @property
    def min_bytes(self) -> int:
        return parse_repart_size(self.get("SizeMinBytes") or "0")

    @property
    def is_slot(self) -> bool:
        """A root slot or a slot's verity partition (``Type=root…``): its content is written by the
        installer and qx-update (the payload, the hash tree), never made by repart."""
        return self.get("Type").startswith("root")


def parse_repart_size(text: str) -> int:
    m = _SIZE_RE.match(text)
    if not m:
        raise UserError(f"partition definition: size '{text}' is not understood", hint="use e.g. 512M or 2G")
    return int(m.group(1)) * _UNITS[m.group(2).upper()]


def read_definitions(directory: Path) -> list[PartitionDef]:
    defs = []
    for p in sorted(directory.glob("*.conf")):
        items: list[tuple[str, str]] = []
        for line in p.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith(("#", ";", "[")):
                continue
            key, sep, value = line.partition("=")
            if sep:
                items.append((key.strip(), value.strip()))
        defs.append(PartitionDef(p.name, tuple(items)))
    if not defs:
        raise UserError(f"{directory}: no partition definitions (*.conf)", hint="the payload is incomplete")
    return defs


@dataclass(frozen=True)
class Payload:
    dir: Path
    version: str
    root: Path
    uki: Path
    manifest_file: Path
    bootloader: Path
    data: Path
    repart_dir: Path
    manifest: dict[str, Any]
    sums: dict[str, str]                    # relative path -> sha256
    enroll_keys: Path | None = None         # keys/auto: the files systemd-boot enrolls (loader.conf says when)

    @property
    def root_info(self) -> dict[str, Any]:
        return dict(self.manifest["artifacts"]["root"])

    @property
    def slot_size(self) -> int:
        return int(self.root_info["uncompressed_size"])

    @property
    def slot_sha256(self) -> str:
        return str(self.root_info["uncompressed_sha256"])

    @property
    def kernel_cmdline(self) -> str:
        return str(self.manifest["kernel_cmdline"])

    @property
    def security_epoch(self) -> int:
        return int(self.manifest.get("security_epoch", 0))

    def uki_cmdline(self) -> str | None:
        """The UKI's own kernel command line (its ``.cmdline`` section), None when it has none. Read from
        the file each time: :meth:`verify` proves the bytes, the caller compares before trusting them."""
        try:
            return secureboot.uki_cmdline(self.uki)
        except OSError as e:
            raise EnvironmentError_(f"installation medium: cannot read {self.uki.name}: {e.strerror or e}",
                                    hint="the medium may be damaged: write it again and retry") from e

    def roothash(self) -> str | None:
        """The dm-verity root hash the UKI boots (slot A is sealed for it); None for a release without
        dm-verity. A malformed ``roothash=`` is refused, not taken for "no verity"."""
        try:
            return verity.roothash_of(self.uki_cmdline())
        except verity.VerityError as e:
            raise UserError(f"installation medium: {self.uki.name}: {e}",
                            hint="the medium holds a broken release: rebuild it with make image") from e

    def definitions(self) -> list[PartitionDef]:
        return read_definitions(self.repart_dir)

    @property
    def min_disk_bytes(self) -> int:
        """The smallest disk the image's partition definitions fit on."""
        return sum(d.min_bytes for d in self.definitions()) + _GPT_OVERHEAD

    def total_bytes(self) -> int:
        return sum((self.dir / rel).stat().st_size for rel in self.sums)

    def verify(self, progress: ProgressFn | None = None) -> None:
        """Hash every file SHA256SUMS lists; a mismatch or a missing file stops the install."""
        total = self.total_bytes()
        done = 0
        for rel, want in sorted(self.sums.items()):
            h = hashlib.sha256()
            try:
                with (self.dir / rel).open("rb") as f:
                    while block := f.read(4 << 20):
                        h.update(block)
                        done += len(block)
                        if progress:
                            progress(done, total)
            except OSError as e:
                raise EnvironmentError_(f"installation medium: cannot read {rel}: {e.strerror or e}",
                                        hint="the medium may be damaged: write it again and retry") from e
            if h.hexdigest() != want:
                raise UserError(f"installation medium: {rel} does not match its SHA256SUMS entry",
                                hint="the medium is damaged or was modified: download and write it again")


def _read_sums(path: Path) -> dict[str, str]:
    sums: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read: {e}", hint="the payload is incomplete or damaged") from e
    for n, line in enumerate(text.splitlines(), 1):
        m = re.match(r"^([0-9a-f]{64})  (\S+)$", line)
        if not m or m.group(2).startswith("/") or ".." in m.group(2).split("/"):
            raise UserError(f"{path}, line {n}: not '<sha256>  <relative path>'", hint="the payload is damaged")
        sums[m.group(2)] = m.group(1)
    return sums


def open_payload(directory: Path) -> Payload:
    """Read and check the payload's description (not its data: see :meth:`Payload.verify`)."""
    desc_file = directory / "payload.json"
    try:
        desc = json.loads(desc_file.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise UserError(f"{directory}: no payload.json: this is not a Quantix installation payload",
                        hint="point --payload at the quantix/ directory of the ISO") from e
    except (OSError, ValueError) as e:
        raise UserError(f"{desc_file}: unreadable: {e}", hint="the payload is damaged") from e
    if not isinstance(desc, dict) or desc.get("format") != FORMAT:
        raise UserError(f"{desc_file}: format {desc.get('format') if isinstance(desc, dict) else '?'} is not "
                        f"{FORMAT}", hint="use the qx-install of the same release as the payload")
    sums = _read_sums(directory / "SHA256SUMS")
    names: dict[str, str] = {}
    for key in ("root", "uki", "manifest", "bootloader", "data", "repart"):
        val = desc.get(key)
        if not isinstance(val, str) or not val or "/" in val or val.startswith("."):
            raise UserError(f"{desc_file}: '{key}' is missing or not a plain file name", hint="the payload is damaged")
        names[key] = val
    for key in ("root", "uki", "manifest", "bootloader", "data"):
        if names[key] not in sums:
            raise UserError(f"{desc_file}: {names[key]} is not listed in SHA256SUMS", hint="the payload is damaged")
    repart_dir = directory / names["repart"]
    listed_defs = {rel for rel in sums if rel.startswith(names["repart"] + "/")}
    on_disk = {f"{names['repart']}/{p.name}" for p in repart_dir.glob("*.conf")}
    if not on_disk or on_disk != listed_defs:
        raise UserError(f"{repart_dir}: partition definitions differ from SHA256SUMS",
                        hint="the payload is damaged")
    enroll: Path | None = None
    if (keys := desc.get("secure_boot_keys")) is not None:
        if not isinstance(keys, str) or not re.fullmatch(r"[a-z]+(/[a-z]+)*", keys):
            raise UserError(f"{desc_file}: 'secure_boot_keys' is not a relative directory", hint="the payload is damaged")
        if any(f"{keys}/{n}" not in sums for n in ENROLL_FILES):
            raise UserError(f"{desc_file}: the Secure Boot files of {keys}/ are not all listed in SHA256SUMS",
                            hint="the payload is damaged")
        enroll = directory / keys
    try:
        manifest = json.loads((directory / names["manifest"]).read_text(encoding="utf-8"))
        version = manifest["version"]
        root = manifest["artifacts"]["root"]
        int(root["uncompressed_size"]), str(root["uncompressed_sha256"]), str(manifest["kernel_cmdline"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{names['manifest']}: not a release manifest ({e})", hint="the payload is damaged") from e
    if not isinstance(version, str) or not is_valid_version(version):
        raise UserError(f"{names['manifest']}: version {version!r} is not valid", hint="the payload is damaged")
    return Payload(dir=directory, version=version, root=directory / names["root"], uki=directory / names["uki"],
                   manifest_file=directory / names["manifest"], bootloader=directory / names["bootloader"],
                   data=directory / names["data"], repart_dir=repart_dir, manifest=manifest, sums=sums,
                   enroll_keys=enroll)


def mount_medium(mountpoint: Path = MEDIA_MOUNT) -> Path | None:
    """Mount the installation medium (filesystem label QUANTIX_OS) read-only; None when there is none."""
    if (mountpoint / PAYLOAD_DIR / "payload.json").exists():
        return mountpoint
    dev = Path("/dev/disk/by-label") / MEDIA_LABEL
    if not dev.exists():
        # -c /dev/null: the devices as they are now, never blkid's cache (see qx_install.sources).
        found = r.run(["blkid", "-c", "/dev/null", "-L", MEDIA_LABEL], check=False).stdout.strip() \
            if r.which("blkid") else ""
        if not found:
            return None
        dev = Path(found)
    mountpoint.mkdir(parents=True, exist_ok=True)
    r.run(["mount", "-o", "ro,nosuid,nodev,noexec", str(dev), str(mountpoint)])
    return mountpoint


def find(media_dirs: list[Path] | None = None) -> Payload:
    """The payload of this installation medium: ``quantix/`` under one of ``media_dirs``, else on the
    medium labelled QUANTIX_OS (mounted read-only at /run/quantix/media)."""
    candidates = list(media_dirs or [])
    if not candidates:
        mounted = mount_medium()
        if mounted is not None:
            candidates.append(mounted)
    for base in candidates:
        for d in (base / PAYLOAD_DIR, base):
            if (d / "payload.json").exists():
                return open_payload(d)
    where = ", ".join(str(c) for c in candidates) or f"no medium labelled {MEDIA_LABEL}"
    raise EnvironmentError_(f"no installation payload found ({where})",
                            hint="boot the Quantix ISO, or give qx-install --payload <dir with payload.json>")


def env_payload_dir() -> Path | None:
    v = os.environ.get("QX_INSTALL_PAYLOAD")
    return Path(v) if v else None
