"""The installation payload the ISO carries under ``quantix/`` (format: :mod:`qx_install.payload`).

Made from one build: the release's root payload, UKI and manifest (the manifest as it stands before
the ISO exists — an ISO cannot carry its own hash), the boot loader and the factory ``/var`` that the
finalize script exported from the image tree, and the image's own partition definitions
(``image/repart``: one source of truth for ``make image`` and the installer).

The boot loader is signed here for Secure Boot (the finalize script exports the unsigned binary: mkosi
signs its own copy later, inside the disk's ESP); the UKI is the release's, already signed. The
Secure Boot enrollment files of the disk's ESP (``loader/keys/auto``) come along as ``keys/auto/`` for
the installer to put on the new host's ESP.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from qx_common import log
from qx_common import run as r
from qx_common.errors import ExternalError
from qx_build.hashing import sha256_file
from qx_build.paths import REPO, Release
from qx_build.secureboot import KeyPair, sign

FORMAT = 1
BOOTLOADER = "systemd-bootx64.efi"
DATA = "data.tar.zst"
REPART = "repart.d"
# Exported by image/scripts/finalize into mkosi's output directory.
MKOSI_VAR_TAR = "quantix-factory-var.tar"
MKOSI_BOOTLOADER = "quantix-systemd-bootx64.efi"
ENROLL_KEYS = "keys/auto"     # PK.auth, KEK.auth, db.auth: systemd-boot's loader/keys/auto on the host's ESP
ENROLL_FILES = ("PK.auth", "KEK.auth", "db.auth")


def assemble(rel: Release, *, mkosi_dir: Path, out: Path, signing: KeyPair, enroll_keys: Path,
             repart_dir: Path = REPO / "image/repart", zstd_level: int = 19) -> Path:
    """Write the payload directory ``out`` (replaced whole) and return it. ``enroll_keys``: a directory
    holding :data:`ENROLL_FILES` (taken from the disk's ESP)."""
    log.step("install payload: root, UKI, manifest, boot loader, factory /var, partition definitions")
    for f in (mkosi_dir / MKOSI_VAR_TAR, mkosi_dir / MKOSI_BOOTLOADER):
        if not f.exists():
            raise ExternalError(f"{f} is missing: image/scripts/finalize did not export it",
                                hint="rebuild without cache (make clean; make image)")
    tmp = out.with_name(out.name + ".new")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / REPART).mkdir(parents=True)
    for src in (rel.root_payload, rel.uki):
        _link_or_copy(src, tmp / src.name)   # large, and never rewritten after this point
    shutil.copyfile(rel.manifest, tmp / rel.manifest.name)  # the release manifest is rewritten after the ISO
    sign(mkosi_dir / MKOSI_BOOTLOADER, tmp / BOOTLOADER, signing)
    (tmp / ENROLL_KEYS).mkdir(parents=True)
    for name in ENROLL_FILES:
        shutil.copyfile(enroll_keys / name, tmp / ENROLL_KEYS / name)
    r.run(["zstd", "-q", f"-{zstd_level}", "-T0", "-f", "-o", str(tmp / DATA), str(mkosi_dir / MKOSI_VAR_TAR)])
    for conf in sorted(repart_dir.glob("*.conf")):
        shutil.copyfile(conf, tmp / REPART / conf.name)
    desc = {"format": FORMAT, "version": rel.version, "root": rel.root_payload.name, "uki": rel.uki.name,
            "manifest": rel.manifest.name, "bootloader": BOOTLOADER, "data": DATA, "repart": REPART,
            "secure_boot_keys": ENROLL_KEYS}
    (tmp / "payload.json").write_text(json.dumps(desc, indent=2, sort_keys=True) + "\n")
    files = sorted(p for p in tmp.rglob("*") if p.is_file())
    sums = "".join(f"{sha256_file(p)}  {p.relative_to(tmp).as_posix()}\n" for p in files)
    (tmp / "SHA256SUMS").write_text(sums)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        dst.hardlink_to(src)
    except OSError:
        shutil.copyfile(src, dst)
