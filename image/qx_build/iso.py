"""The hybrid ISO: the live system's ESP (:mod:`qx_build.live`) as the El Torito EFI image *and* as a GPT partition.

The ESP image is a file inside the ISO9660 volume (``boot/efiboot.img``), because UEFI firmware
(EDK2/OVMF) sizes a no-emulation boot image from the ISO9660 volume: an image outside the volume (an
appended partition) is not found. ``-efi-boot-part --efi-boot-image`` then declares those same bytes
as the GPT EFI partition, so the ESP is stored once and one file boots from a CD and from a USB disk.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from qx_common import log
from qx_common.errors import ExternalError
from qx_build import gpt
from qx_install import remaster

VOLUME_ID = remaster.VOLUME_ID


def extract_esp(live_disk: Path, out: Path) -> None:
    esps = [p for p in gpt.read_table(live_disk) if p.type == gpt.ESP_TYPE]
    if len(esps) != 1:
        raise ExternalError(f"{live_disk}: expected one ESP, found {len(esps)}",
                            hint="the live ESP is not what qx-build expects: make clean; make image")
    part = esps[0]
    with live_disk.open("rb") as src, out.open("wb") as dst:
        src.seek(part.start)
        remaining = part.size
        while remaining:
            chunk = src.read(min(4 << 20, remaining))
            if not chunk:
                raise ExternalError(f"{live_disk}: ESP ends early", hint="make clean; make image")
            dst.write(chunk)
            remaining -= len(chunk)


def make_iso(*, live_disk: Path, out: Path, version: str, source_date_epoch: int, payload_dir: Path | None) -> None:
    """``payload_dir``: the installation payload (:mod:`qx_build.installpayload`), stored as ``quantix/``."""
    log.step("iso: hybrid UEFI ISO (El Torito + GPT) from the live ESP")
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        tmpd = Path(tmp)
        root = tmpd / "isoroot"
        root.mkdir()
        if payload_dir is not None:
            shutil.copytree(payload_dir, root / "quantix")
        else:
            (root / "quantix").mkdir()
        (root / "boot").mkdir()
        extract_esp(live_disk, root / "boot" / "efiboot.img")
        (root / "README.TXT").write_text(
            f"Quantix OS {version}\r\nBoot this medium in UEFI mode. See https://quantix-os.example/docs\r\n")
        remaster.master(root, out, source_date_epoch=source_date_epoch)
