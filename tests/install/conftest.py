"""Fixtures for installer tests: a small but real installation payload and real loop-device disks.

``install_payload`` builds the payload the way ``qx_build.installpayload`` does for a release, from
small real parts: an erofs root (mkfs.erofs) compressed with zstd, a UKI stand-in (systemd's EFI addon
stub, a real PE, with the ``.cmdline`` and ``.osrel`` sections a UKI has), the host's systemd-boot
binary, a factory ``/var`` tarball holding a locked root in ``shadow``, and partition definitions — the
image's own (``image/repart``) or the same files with smaller sizes, so most tests write a 300 MiB disk
rather than 6 GiB (the real definitions get their own test).

``verity=True`` makes a dm-verity release: the UKI's command line boots ``roothash=`` of the root's tree
(``qx_common.verity``, as the image build seals it), or the ``roothash`` given (a UKI that does not belong
to its root). ``old_layout=True`` gives the definitions of a release from before dm-verity (no
``*-verity.conf``, slots of 2 GiB — small: 64 MiB), to make a disk such a release installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from qx_common import verity
from qx_install import payload as payloadmod

REPO = Path(__file__).resolve().parents[2]
VERSION = "0.9.1"
KERNEL_CMDLINE = "root=PARTLABEL=root-a rootfstype=erofs ro console=ttyS0"
VERITY_CMDLINE = f"root={verity.VERITY_ROOT_DEVICE} rootfstype=erofs ro {{roothash}} console=ttyS0"
# Each slot and its verity partition take what one slot took before verity (image/repart), so a disk of
# the old layout keeps its data partition's place through a keep-data install.
SMALL_SIZES = {"00-esp.conf": "64M", "10-root-a.conf": "56M", "15-root-a-verity.conf": "8M",
               "20-root-b.conf": "56M", "25-root-b-verity.conf": "8M", "30-data.conf": "64M"}
OLD_SIZES = {"10-root-a.conf": "2G", "20-root-b.conf": "2G"}
OLD_SMALL_SIZES = {**SMALL_SIZES, "10-root-a.conf": "64M", "20-root-b.conf": "64M"}
SYSTEMD_BOOT = Path("/usr/lib/systemd/boot/efi/systemd-bootx64.efi")
EFI_STUB = Path("/usr/lib/systemd/boot/efi/addonx64.efi.stub")   # a small real PE/COFF EFI binary


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def make_uki(dest: Path, *, cmdline: str, version: str) -> Path:
    """A PE with a UKI's ``.cmdline`` and ``.osrel`` sections (laid out as ukify does), at ``dest``."""
    work = dest.parent / f".{dest.name}-sections"
    work.mkdir()
    (work / "cmdline").write_text(cmdline)
    (work / "osrel").write_text(f'NAME="Quantix OS"\nVERSION_ID="{version}"\n')
    subprocess.run(["objcopy", "--add-section", f".osrel={work / 'osrel'}", "--change-section-vma", ".osrel=0x20000",
                    "--add-section", f".cmdline={work / 'cmdline'}", "--change-section-vma", ".cmdline=0x30000",
                    str(EFI_STUB), str(dest)], check=True, capture_output=True)
    shutil.rmtree(work)
    return dest


def roothash_of_root(erofs: Path) -> str:
    """The root hash of the slot holding ``erofs`` (the tree the installer seals, qx_common.verity)."""
    size, sha = erofs.stat().st_size, _sha(erofs)
    with erofs.open("rb") as f:
        return verity.build(f, size, verity.params_for(sha)).roothash


def _definitions(dest: Path, *, small: bool, old_layout: bool) -> None:
    """The image's partition definitions into ``dest``: small sizes, the layout from before verity."""
    dest.mkdir()
    sizes = (OLD_SMALL_SIZES if small else OLD_SIZES) if old_layout else (SMALL_SIZES if small else {})
    for conf in sorted((REPO / "image/repart").glob("*.conf")):
        if old_layout and conf.name.endswith("-verity.conf"):
            continue
        text = conf.read_text()
        if conf.name in sizes:
            size = sizes[conf.name]
            text = "\n".join(line for line in text.splitlines() if not line.startswith("SizeM"))
            text += f"\nSizeMinBytes={size}\n" + ("" if conf.name == "30-data.conf" else f"SizeMaxBytes={size}\n")
        (dest / conf.name).write_text(text)


def make_payload(dest: Path, *, version: str = VERSION, small: bool = True, root_marker: str = "",
                 verity: bool = False, roothash: str | None = None, old_layout: bool = False) -> Path:
    """Write an installation payload directory at ``dest`` and return it (see the module docstring)."""
    work = dest.parent / f".{dest.name}-work"
    shutil.rmtree(work, ignore_errors=True)
    (work / "root/etc").mkdir(parents=True)
    (work / "root/etc/os-release").write_text(f'NAME="Quantix OS"\nVERSION_ID="{version}"\n')
    (work / "root/marker").write_text(root_marker or f"root of {version}\n")
    # Incompressible bulk: the slot write spans several 4 MiB blocks (crash point "write" is after the first).
    (work / "root/bulk").write_bytes(os.urandom(10 * 1024 * 1024))
    dest.mkdir(parents=True)
    erofs = work / "root.erofs"
    subprocess.run(["mkfs.erofs", "--quiet", str(erofs), str(work / "root")], check=True)
    root = dest / f"quantix-os_{version}.root.erofs.zst"
    subprocess.run(["zstd", "-q", "-3", "-o", str(root), str(erofs)], check=True)
    uki = dest / f"quantix-os_{version}.efi"
    cmdline = VERITY_CMDLINE.format(roothash=f"roothash={roothash or roothash_of_root(erofs)}") if verity \
        else KERNEL_CMDLINE
    make_uki(uki, cmdline=cmdline, version=version)
    shutil.copyfile(SYSTEMD_BOOT, dest / "systemd-bootx64.efi")
    # Secure Boot enrollment files (signed EFI variable updates in a real build; here their bytes only).
    (dest / "keys/auto").mkdir(parents=True)
    for name in payloadmod.ENROLL_FILES:
        (dest / "keys/auto" / name).write_bytes(f"{name} of {version}".encode() + os.urandom(16))
    var = work / "var"
    (var / "lib/quantix/config/network").mkdir(parents=True)
    (var / "lib/quantix/config/shadow").write_text("root:*:20000:0:99999:7:::\ndaemon:*:20000:0:99999:7:::\n")
    (var / "lib/quantix/config/shadow").chmod(0o640)
    (var / "log").mkdir()
    subprocess.run(["tar", "--zstd", "-cf", str(dest / "data.tar.zst"), "--numeric-owner", "-C", str(var), "."],
                   check=True)
    _definitions(dest / "repart.d", small=small, old_layout=old_layout)
    manifest = {"format": 1, "version": version, "security_epoch": 0, "kernel_cmdline": cmdline,
                "source_date_epoch": 1767225600,
                "artifacts": {"root": {"file": root.name, "size": root.stat().st_size, "sha256": _sha(root),
                                       "uncompressed_size": erofs.stat().st_size,
                                       "uncompressed_sha256": _sha(erofs)},
                              "uki": {"file": uki.name, "size": uki.stat().st_size, "sha256": _sha(uki)}}}
    mf = dest / f"quantix-os_{version}.manifest.json"
    mf.write_text(json.dumps(manifest, indent=2))
    (dest / "payload.json").write_text(json.dumps({
        "format": 1, "version": version, "root": root.name, "uki": uki.name, "manifest": mf.name,
        "bootloader": "systemd-bootx64.efi", "data": "data.tar.zst", "repart": "repart.d",
        "secure_boot_keys": "keys/auto"}))
    files = sorted(p for p in dest.rglob("*") if p.is_file())
    (dest / "SHA256SUMS").write_text("".join(f"{_sha(p)}  {p.relative_to(dest).as_posix()}\n" for p in files))
    shutil.rmtree(work)
    return dest


@pytest.fixture
def install_payload(tmp_path: Path) -> payloadmod.Payload:
    return payloadmod.open_payload(make_payload(tmp_path / "payload"))


@dataclass
class LoopDisk:
    path: str          # /dev/loopN
    file: Path

    def partition(self, n: int) -> str:
        return f"{self.path}p{n}"


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("installer disk tests need root (loop devices); deselect them with -m 'not root'")


@pytest.fixture
def loop_disk(tmp_path: Path) -> Iterator[Callable[..., LoopDisk]]:
    """``loop_disk(size_mib)`` attaches a fresh sparse file as a partition-scanning loop device."""
    _require_root()
    attached: list[LoopDisk] = []

    def make(size_mib: int = 300, name: str = "disk") -> LoopDisk:
        f = tmp_path / f"{name}{len(attached)}.img"
        with f.open("wb") as fh:
            fh.truncate(size_mib * 1024 * 1024)
        dev = subprocess.run(["losetup", "-fP", "--show", str(f)], check=True, capture_output=True,
                             text=True).stdout.strip()
        d = LoopDisk(dev, f)
        attached.append(d)
        return d

    yield make
    for d in attached:
        # Anything a failed test left mounted from this disk would keep the loop device busy.
        for line in Path("/proc/self/mounts").read_text().splitlines():
            src, mnt = line.split()[:2]
            if src.startswith(d.path):
                subprocess.run(["umount", "-l", mnt], check=False)
        subprocess.run(["losetup", "-d", d.path], check=False)
