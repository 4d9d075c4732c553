"""Secure Boot for e2e guests: an OVMF variable store that trusts the certificate a release was signed
with — taken from the release manifest's ``secure_boot`` record, as an operator would take it from the
release notes — enrolled as PK, KEK and db (qx_build.qemu.enrolled_vars), Secure Boot on."""

from __future__ import annotations

import json
from pathlib import Path

from qx_build import qemu
from qx_build.paths import Release

# The kernel's EFI stub says it (efi_info) when the firmware reports Secure Boot on; the boot report
# prints the firmware's variables as read from userspace.
STUB_SAYS_ON = "EFI stub: UEFI Secure Boot is enabled"
REPORT_SAYS_ON = "QUANTIX-SECURE-BOOT state=enabled"


def vars_trusting(release: Release, workdir: Path) -> Path:
    sb = json.loads(release.manifest.read_text())["secure_boot"]
    assert sb["signed"] is True, f"the release is not signed for Secure Boot: {sb}"
    workdir.mkdir(parents=True, exist_ok=True)
    cert = workdir / "release-db.crt"
    cert.write_text(sb["certificate_pem"])
    return qemu.enrolled_vars(cert, workdir / "sb-vars.fd")
