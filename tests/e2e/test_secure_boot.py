"""Secure Boot in QEMU: the enforcing OVMF firmware (SMM, Secure Boot on) trusting only the certificate the
release was signed with (from its manifest; no Microsoft keys).

- The release's disk boots: the firmware starts systemd-boot, systemd-boot the UKI, and both the kernel's
  EFI stub and the booted system (the boot report, from efivars) say Secure Boot is on. That is proven in
  the disk boot of tests/e2e/test_boot.py, which runs under this firmware (one boot, not two).
- The ISO written to a USB stick boots: its ESP's UKI (the live system) carries a valid signature.
- A copy of the disk with one changed byte in its UKI is refused: the firmware starts systemd-boot and
  refuses the UKI; no kernel ever starts.

These boots stop at the first proof (a full boot to a healthy node with Secure Boot on takes the same path).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qx_build import esp, pe
from qx_build.paths import Release, read_mkosi_setting
from qx_update import bootentry
from tests.e2e import secureboot
from tests.e2e.guest import BootedGuest

# The firmware refusing the boot loader itself (BOOTX64.EFI) would be a different failure than the one tested.
LOADER_REFUSED = r"BdsDxe: failed to load .*Access Denied"
# systemd-boot's words when the firmware's LoadImage() refuses the entry's UKI, e.g. (systemd 257, OVMF)
# "boot.c:2576@image_start: Error loading \EFI\quantix\quantix-os_0.1.0.efi: Access denied"
# (EFI_ACCESS_DENIED; other firmware answers EFI_SECURITY_VIOLATION).
UKI_REFUSED = r"Error loading \\EFI\\quantix\\quantix-os_\S+\.efi: (?:Access denied|Security violation)"
REFUSAL_TIMEOUT = 300   # firmware + systemd-boot under TCG with SMM: about a minute on a busy machine


@pytest.fixture
def sb_guest(release: Release, tmp_path: Path) -> Iterator[Callable[..., BootedGuest]]:
    """``sb_guest(disk=… or usb=…)``: a started guest under the enforcing firmware trusting the release's certificate."""
    guests: list[BootedGuest] = []

    def make(**kw: object) -> BootedGuest:
        g = BootedGuest(tmp_path / f"guest{len(guests)}", **kw)  # type: ignore[arg-type]
        g.machine.secure_boot_vars = secureboot.vars_trusting(release, tmp_path / "sb")
        guests.append(g)
        g.start()
        return g

    yield make
    for g in guests:
        g.stop()


def test_the_iso_as_a_usb_disk_boots_with_secure_boot_on(release: Release, sb_guest) -> None:
    guest = sb_guest(usb=release.iso, memory_mb=3072)
    guest.wait_for(re.escape(secureboot.STUB_SAYS_ON), 300, fail=LOADER_REFUSED)
    print(f"ISO (USB): the live UKI started with Secure Boot on {guest.elapsed():.0f} s after QEMU start")


def test_a_uki_with_one_changed_byte_is_refused_by_the_firmware(release: Release, sb_guest, tmp_path: Path) -> None:
    disk = tmp_path / "tampered.raw"
    # A sparse copy (the image is mostly holes); the release itself is never touched.
    subprocess.run(["cp", "--sparse=always", str(release.disk), str(disk)], check=True)
    image = esp.EspImage(disk, source_date_epoch=int(read_mkosi_setting("SourceDateEpoch")))
    uki = image.copy_out(bootentry.uki_path(release.version), tmp_path / "uki.efi")
    linux = next(s for s in pe.sections(uki) if s.name == ".linux")
    data = bytearray(uki.read_bytes())
    data[linux.offset + linux.size // 2] ^= 0x01       # one bit of one byte in the middle of the kernel
    uki.write_bytes(bytes(data))
    image.copy_in(uki, bootentry.uki_path(release.version))
    assert image.copy_out(bootentry.uki_path(release.version), tmp_path / "back.efi").read_bytes() == bytes(data)

    guest = sb_guest(disk=disk)
    # systemd-boot (signed, untouched) must start; only the UKI it loads next is refused.
    refused = guest.wait_for(UKI_REFUSED, REFUSAL_TIMEOUT, fail=rf"EFI stub:|Linux version|{LOADER_REFUSED}")
    print(f"tampered UKI refused {guest.elapsed():.0f} s after QEMU start: {refused.group(0)!r}")
    log = guest.log()
    assert "BdsDxe: starting Boot" in log, guest.tail()     # the firmware started the (signed) boot loader
    assert "EFI stub:" not in log and "Linux version" not in log, guest.tail()
