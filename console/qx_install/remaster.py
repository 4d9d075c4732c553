"""Mastering the Quantix ISO — the one place its xorriso command line lives — and remastering a stock
ISO with an answer file for unattended installs (``qx-install iso``).

The ISO is hybrid: the live ESP image ``boot/efiboot.img`` is the El Torito EFI boot image *inside* the
ISO9660 volume (EDK2 sizes a no-emulation image from the volume) and, through ``-efi-boot-part
--efi-boot-image``, the GPT EFI partition as well, so one file boots from a CD and from a USB disk.
Remastering rebuilds the image from its extracted tree with the same command (xorriso's boot replay
produces overlapping GPT entries for this layout), so a remastered ISO boots exactly as the stock one.
Times are the release's SOURCE_DATE_EPOCH (from the payload's manifest): the same inputs give the same
bytes.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
from pathlib import Path

from qx_common import run as r
from qx_common.errors import UserError
from qx_common.version import IMAGE_ID, product_version

VOLUME_ID = "QUANTIX_OS"
EFI_IMAGE = "boot/efiboot.img"
ANSWER_PATH = "quantix/answer.toml"


def master(tree: Path, out: Path, *, source_date_epoch: int) -> None:
    """Write the hybrid ISO of ``tree`` (which holds ``boot/efiboot.img``) to ``out`` (via a temp file)."""
    if not (tree / EFI_IMAGE).is_file():
        raise UserError(f"{tree}: no {EFI_IMAGE}", hint="this is not a Quantix ISO tree")
    stamp = dt.datetime.fromtimestamp(source_date_epoch, dt.timezone.utc).strftime("%Y%m%d%H%M%S00")
    part = out.with_name(out.name + ".part")
    part.unlink(missing_ok=True)
    r.run(["xorriso", "-as", "mkisofs", "-o", part, "-iso-level", "3", "-R", "-J", "-V", VOLUME_ID,
           "--modification-date=" + stamp, "-e", EFI_IMAGE, "-no-emul-boot",
           "-efi-boot-part", "--efi-boot-image", tree], env={"SOURCE_DATE_EPOCH": str(source_date_epoch)})
    os.replace(part, out)


def default_iso() -> Path:
    iso = Path("build") / f"{IMAGE_ID}_{product_version()}.iso"
    if not iso.exists():
        raise UserError(f"{iso} does not exist", hint="give the stock ISO: qx-install iso --answer F --out O ISO")
    return iso


def _epoch(tree: Path) -> int:
    try:
        desc = json.loads((tree / "quantix/payload.json").read_text())
        manifest = json.loads((tree / "quantix" / desc["manifest"]).read_text())
        return int(manifest["source_date_epoch"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"the ISO has no readable installation payload ({e})",
                        hint="use a Quantix installer ISO built by make image") from e


def with_answer(src: Path, answer: Path, out: Path) -> None:
    """``out`` = ``src`` plus ``quantix/answer.toml`` (the answer is validated by the caller)."""
    if not src.is_file():
        raise UserError(f"{src}: no such ISO", hint="give the path of the stock Quantix ISO")
    if out.resolve() == src.resolve():
        raise UserError("--out is the stock ISO itself", hint="write the unattended ISO to a new file")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".qx-iso-") as tmp:
        tree = Path(tmp) / "tree"
        r.run(["xorriso", "-osirrox", "on", "-indev", src, "-extract", "/", tree])
        for d in (tree, *[p for p in tree.rglob("*") if p.is_dir()]):
            d.chmod(0o755)
        if not (tree / "quantix").is_dir():
            raise UserError(f"{src}: not a Quantix installer ISO (no quantix/ directory)",
                            hint="use the ISO built by make image")
        shutil.copyfile(answer, tree / ANSWER_PATH)
        (tree / ANSWER_PATH).chmod(0o644)
        master(tree, out, source_date_epoch=_epoch(tree))
