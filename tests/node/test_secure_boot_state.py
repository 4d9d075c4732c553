"""The boot report's QUANTIX-SECURE-BOOT marker (qx_node.bootcheck.secure_boot_state) read from an efivarfs
layout on real files: 4 bytes of attributes, then the variable's one-byte value."""

from __future__ import annotations

from pathlib import Path

from qx_node import bootcheck

GUID = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
ATTRS = b"\x06\x00\x00\x00"   # BOOTSERVICE_ACCESS | RUNTIME_ACCESS, as efivarfs shows them


def _vars(d: Path, **flags: int) -> Path:
    d.mkdir()
    for name, value in flags.items():
        (d / f"{name}-{GUID}").write_bytes(ATTRS + bytes([value]))
    return d


def test_the_firmware_state_is_read_from_efivars(tmp_path: Path) -> None:
    assert bootcheck.secure_boot_state(_vars(tmp_path / "on", SecureBoot=1, SetupMode=0)) == "enabled"
    assert bootcheck.secure_boot_state(_vars(tmp_path / "off", SecureBoot=0, SetupMode=0)) == "disabled"
    assert bootcheck.secure_boot_state(_vars(tmp_path / "setup", SecureBoot=0, SetupMode=1)) == "setup-mode"
    # Firmware without the variables at all (older UEFI, or Secure Boot support compiled out).
    assert bootcheck.secure_boot_state(_vars(tmp_path / "none")) == "disabled"
    assert bootcheck.secure_boot_state(tmp_path / "legacy-bios-boot") == "unsupported"
