"""The live system the ISO boots, made from the disk variant's own tree: no second mkosi run.

The live system is the whole OS as the initrd of one UKI (systemd runs it from RAM; ``quantix.live=1``
on its command line makes the console start the installer). It used to be a second mkosi build with
``--format esp``, which installed, configured and archived the same packages again (about 40 % of a
warm build). Now the disk variant's finalize script (``image/scripts/finalize``) exports the very tree
the root slot is made of, mtimes at SOURCE_DATE_EPOCH, as ``quantix-tree/`` in mkosi's output directory
(:data:`TREE_DIR`; a rebuild after a Python-only change updates that tree in place: :mod:`qx_build.quick`).
From it:

- :func:`archive` — the tree as a newc cpio (names sorted bytewise, ``cpio --reproducible``), without
  ``/etc/fstab``, which mounts the installed host's partitions, and ``/boot``, whose kernel the UKI carries;
- the stub, ``os-release`` and the kernel release (``usr/lib/modules/<kver>``) ukify needs besides the
  kernel, which is mkosi's split ``.vmlinuz`` artifact (the disk UKI's own kernel).

:func:`build_esp` then does what mkosi did for ``--format esp``: ukify assembles the UKI, and
systemd-repart makes a GPT disk holding one FAT ESP with that UKI as ``/EFI/BOOT/BOOTX64.EFI`` (no boot
menu: the medium has one system). :mod:`qx_build.iso` takes that ESP into the ISO.

Reproducible: the cpio is sorted with fixed times, ukify's output is a function of its inputs, and
repart's partition and filesystem ids come from mkosi.conf's ``Seed=`` with SOURCE_DATE_EPOCH for FAT
timestamps. The kernel command line is declared here and nowhere else.
"""

from __future__ import annotations

import os
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
TREE_DIR = "quantix-tree"  # under the disk variant's mkosi output directory (image/scripts/finalize)
_STUB = "usr/lib/systemd/boot/efi/linuxx64.efi.stub"
_OS_RELEASE = "usr/lib/os-release"
_LEFT_OUT = {b"etc/fstab", b"boot"}  # with everything under them
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


def _checked(tree: Path) -> str:
    """The tree's kernel release, after checking that what the live UKI needs from the tree is there."""
    missing = [n for n in (_STUB, _OS_RELEASE) if not (tree / n).is_file()]
    kvers = sorted(p.name for p in (tree / "usr/lib/modules").glob("*")) if (tree / "usr/lib/modules").is_dir() else []
    if len(kvers) != 1:
        missing.append(f"usr/lib/modules/<one kernel> (found {len(kvers)})")
    if missing:
        raise ExternalError(f"{tree}: the live system's files are missing ({', '.join(missing)})",
                            hint="image/scripts/finalize exports the tree during the disk build: make clean; make image")
    return kvers[0]


def archive(tree: Path, out: Path) -> None:
    """``tree`` as a reproducible newc cpio at ``out``: every entry but :data:`_LEFT_OUT`, sorted bytewise
    (what ``find -printf '%P\\0' | LC_ALL=C sort -z`` gives), owners and modes as in the tree."""
    names: list[bytes] = []
    root = os.fsencode(tree)
    for dirpath, dirs, files in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        prefix = b"" if rel_dir == b"." else rel_dir + b"/"
        for name in [*dirs, *files]:
            rel = prefix + name
            if rel not in _LEFT_OUT:
                names.append(rel)
        dirs[:] = [d for d in dirs if prefix + d not in _LEFT_OUT]
    names.sort()
    tmp = out.with_name(out.name + ".part")
    try:
        with tmp.open("wb") as f, r.spawn(["cpio", "--create", "--reproducible", "--null", "--format=newc",
                                           "--quiet"], stdin=r.PIPE, stdout=f, cwd=tree, wait_timeout=None) as cpio:
            assert cpio.stdin is not None
            cpio.stdin.write(b"".join(n + b"\0" for n in names))
        tmp.rename(out)
    finally:
        tmp.unlink(missing_ok=True)


def build_uki(tree: Path, kernel: Path, out: Path, *, signing: KeyPair | None = None) -> None:
    """UKI = systemd-stub + ``kernel`` + :func:`archive` of ``tree`` as initrd + :data:`CMDLINE`; signed for
    Secure Boot (the UKI and the kernel in it, as mkosi does for the disk's UKI) with ``signing``."""
    kver = _checked(tree)
    initrd = out.with_name(out.name + ".cpio")
    archive(tree, initrd)
    cmdline = out.with_name(out.name + ".cmdline")
    # Older stubs want a NUL-terminated .cmdline; a file keeps the NUL out of argv (as mkosi does).
    cmdline.write_text(CMDLINE + "\0")
    out.unlink(missing_ok=True)
    try:
        r.run([_SYSTEM_PYTHON, _ukify(), "--cmdline", f"@{cmdline}", "--os-release", f"@{tree / _OS_RELEASE}",
               "--stub", str(tree / _STUB), "--efi-arch", "x64", "--uname", kver, "--output", str(out),
               *(ukify_args(signing) if signing is not None else []),
               "build", "--linux", str(kernel), "--initrd", str(initrd)])
    finally:
        cmdline.unlink(missing_ok=True)
        initrd.unlink(missing_ok=True)


def build_esp(tree: Path, kernel: Path, work: Path, *, source_date_epoch: int,
              signing: KeyPair | None = None, verify: Callable[[Path], None] | None = None) -> Path:
    """The live ESP as a one-partition GPT disk image (``work/live.raw``); returns its path.
    ``verify`` is called on the UKI before it goes into the ESP (the build checks its signature)."""
    log.step("live: UKI with the disk variant's tree as initrd, and its ESP")
    work.mkdir(parents=True, exist_ok=True)
    uki = work / "live.efi"
    build_uki(tree, kernel, uki, signing=signing)
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
