"""The live system the ISO boots, made from the disk variant's own tree: no second mkosi run.

The live system is the whole OS as the initrd of one UKI (systemd runs it from RAM; ``quantix.live=1``
on its command line makes the console start the installer). It used to be a second mkosi build with
``--format esp``, which installed, configured and archived the same packages again (about 40 % of a
warm build). Now the disk variant's finalize script (``image/scripts/finalize``) exports, from the very
tree the root slot is made of:

- ``quantix-live/root.cpio`` — the tree as a newc cpio (sorted names, mtimes at SOURCE_DATE_EPOCH,
  without ``/etc/fstab``, which mounts the installed host's partitions);
- ``quantix-live/linuxx64.efi.stub``, ``os-release``, ``uname`` — what ukify needs besides the kernel,
  which is mkosi's split ``.vmlinuz`` artifact (the disk UKI's own kernel).

:func:`build_esp` then does what mkosi did for ``--format esp``: ukify assembles the UKI, and
systemd-repart makes a GPT disk holding one FAT ESP with that UKI as ``/EFI/BOOT/BOOTX64.EFI`` (no boot
menu: the medium has one system). :mod:`qx_build.iso` takes that ESP into the ISO.

Reproducible: the cpio is sorted with fixed times, ukify's output is a function of its inputs, and
repart's partition and filesystem ids come from mkosi.conf's ``Seed=`` with SOURCE_DATE_EPOCH for FAT
timestamps. The kernel command line is declared here and nowhere else.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from qx_common import log
from qx_common import run as r
from qx_common.errors import ExternalError
from qx_build.paths import read_mkosi_setting
from qx_build.secureboot import KeyPair, ukify_args

CMDLINE = ("console=tty1 console=ttyS0,115200 systemd.show_status=error loglevel=4 quantix.live=1 "
           "systemd.ssh_auto=0")
EXPORT_DIR = "quantix-live"  # under the disk variant's mkosi output directory (image/scripts/finalize)
_UKIFY = ("ukify", "/usr/lib/systemd/ukify")
# ukify starts with "#!/usr/bin/env python3", which would find the venv's or another Python without
# pefile; Debian's python3-pefile is for the system interpreter (mkosi runs it the same way).
_SYSTEM_PYTHON = "/usr/bin/python3"
# FAT32 needs enough clusters for OVMF to accept it; mkosi reserves the same minimum and headroom.
_ESP_MIN = 26 << 20
_ESP_HEADROOM = 10 << 20


def _ukify() -> str:
    for name in _UKIFY:
        if found := shutil.which(name):
            return found
    raise ExternalError("ukify not found (it assembles the live UKI)",
                        hint="install the systemd package's ukify and python3-pefile: make host-deps")


def _exported(mkosi_dir: Path) -> Path:
    src = mkosi_dir / EXPORT_DIR
    missing = [n for n in ("root.cpio", "linuxx64.efi.stub", "os-release", "uname") if not (src / n).is_file()]
    if missing:
        raise ExternalError(f"{src}: the live system's files are missing ({', '.join(missing)})",
                            hint="image/scripts/finalize exports them during the disk build: make clean; make image")
    return src


def build_uki(mkosi_dir: Path, kernel: Path, out: Path, *, signing: KeyPair | None = None) -> None:
    """UKI = systemd-stub + ``kernel`` + the exported tree as initrd + :data:`CMDLINE`; signed for
    Secure Boot (the UKI and the kernel in it, as mkosi does for the disk's UKI) with ``signing``."""
    src = _exported(mkosi_dir)
    cmdline = out.with_name(out.name + ".cmdline")
    # Older stubs want a NUL-terminated .cmdline; a file keeps the NUL out of argv (as mkosi does).
    cmdline.write_text(CMDLINE + "\0")
    out.unlink(missing_ok=True)
    r.run([_SYSTEM_PYTHON, _ukify(), "--cmdline", f"@{cmdline}", "--os-release", f"@{src / 'os-release'}",
           "--stub", str(src / "linuxx64.efi.stub"), "--efi-arch", "x64",
           "--uname", (src / "uname").read_text().strip(), "--output", str(out),
           *(ukify_args(signing) if signing is not None else []),
           "build", "--linux", str(kernel), "--initrd", str(src / "root.cpio")])
    cmdline.unlink()


def build_esp(mkosi_dir: Path, kernel: Path, work: Path, *, source_date_epoch: int,
              signing: KeyPair | None = None, verify: Callable[[Path], None] | None = None) -> Path:
    """The live ESP as a one-partition GPT disk image (``work/live.raw``); returns its path.
    ``verify`` is called on the UKI before it goes into the ESP (the build checks its signature)."""
    log.step("live: UKI with the disk variant's tree as initrd, and its ESP")
    work.mkdir(parents=True, exist_ok=True)
    uki = work / "live.efi"
    build_uki(mkosi_dir, kernel, uki, signing=signing)
    if verify is not None:
        verify(uki)
    size = max(uki.stat().st_size, _ESP_MIN) + _ESP_HEADROOM
    definitions = work / "esp.repart.d"
    shutil.rmtree(definitions, ignore_errors=True)
    definitions.mkdir()
    (definitions / "00-esp.conf").write_text(
        "[Partition]\nType=esp\nFormat=vfat\n"
        f"CopyFiles={uki}:/EFI/BOOT/BOOTX64.EFI\n"
        f"SizeMinBytes={size}\nSizeMaxBytes={size + 4096}\n")
    disk = work / "live.raw"
    disk.unlink(missing_ok=True)
    r.run(["systemd-repart", "--empty=create", "--size=auto", "--dry-run=no", "--no-pager", "--json=off",
           "--offline=yes", "--seed", read_mkosi_setting("Seed"), "--definitions", str(definitions), str(disk)],
          env={"SOURCE_DATE_EPOCH": str(source_date_epoch)})
    uki.unlink()
    return disk
