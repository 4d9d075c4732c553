"""The hybrid ISO: the live variant's ESP as the El Torito EFI image *and* as a GPT partition.

The ESP image is a file inside the ISO9660 volume (``boot/efiboot.img``), because UEFI firmware
(EDK2/OVMF) sizes a no-emulation boot image from the ISO9660 volume: an image outside the volume (an
appended partition) is not found. ``-efi-boot-part --efi-boot-image`` then declares those same bytes
as the GPT EFI partition, so the ESP is stored once and one file boots from a CD and from a USB disk.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from pathlib import Path

from qx_common import log
from qx_common import run as r
from qx_build import gpt

VOLUME_ID = "QUANTIX_OS"


def extract_esp(live_disk: Path, out: Path) -> None:
    esps = [p for p in gpt.read_table(live_disk) if p.type == gpt.ESP_TYPE]
    if len(esps) != 1:
        raise OSError(f"{live_disk}: expected one ESP, found {len(esps)}")
    part = esps[0]
    with live_disk.open("rb") as src, out.open("wb") as dst:
        src.seek(part.start)
        remaining = part.size
        while remaining:
            chunk = src.read(min(4 << 20, remaining))
            if not chunk:
                raise OSError(f"{live_disk}: ESP ends early")
            dst.write(chunk)
            remaining -= len(chunk)


def make_iso(*, live_disk: Path, out: Path, version: str, source_date_epoch: int, extra_files: list[Path]) -> None:
    log.step("iso: hybrid UEFI ISO (El Torito + GPT) from the live ESP")
    stamp = dt.datetime.fromtimestamp(source_date_epoch, dt.timezone.utc).strftime("%Y%m%d%H%M%S00")
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        tmpd = Path(tmp)
        root = tmpd / "isoroot"
        (root / "quantix").mkdir(parents=True)
        (root / "boot").mkdir()
        extract_esp(live_disk, root / "boot" / "efiboot.img")
        for f in extra_files:
            shutil.copy2(f, root / "quantix" / f.name)
        (root / "README.TXT").write_text(
            f"Quantix OS {version}\r\nBoot this medium in UEFI mode. See https://quantix-os.example/docs\r\n")
        part_tmp = out.with_name(out.name + ".part")
        r.run(["xorriso", "-as", "mkisofs", "-o", part_tmp, "-iso-level", "3", "-R", "-J",
               "-V", VOLUME_ID, "--modification-date=" + stamp,
               "-e", "boot/efiboot.img", "-no-emul-boot",
               "-efi-boot-part", "--efi-boot-image", root], env={"SOURCE_DATE_EPOCH": str(source_date_epoch)})
        part_tmp.rename(out)
