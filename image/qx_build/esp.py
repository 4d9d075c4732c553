"""Edit the ESP inside a disk image file with mtools (no mounts, no loop device needed).

mkosi installs its UKI as a type #2 entry (``EFI/Linux/*.efi``), with the placeholder root hash.
Quantix boots every slot through a type #1 entry instead (see ``qx_update.bootentry``: boot counting per
slot), so :func:`install_slot_a` replaces it with the sealed UKI in ``EFI/quantix/`` and writes slot A's
entry and ``loader.conf``. Slot A is the factory slot: it has no boot counter (it is good).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from qx_common import log
from qx_common import run as r
from qx_common.errors import UserError
from qx_build import gpt
from qx_update import bootentry

_MTOOLS_ENV = {"MTOOLS_SKIP_CHECK": "1"}


class EspImage:
    """The ESP partition of a disk image file, addressed with mtools' ``file@@offset`` syntax."""

    def __init__(self, image: Path, *, source_date_epoch: int) -> None:
        part = gpt.find(gpt.read_table(image), "esp")
        self._target = f"{image}@@{part.start}"
        self._epoch = source_date_epoch

    def _m(self, tool: str, *args: str) -> str:
        return r.run([tool, "-i", self._target, *args], env=_MTOOLS_ENV).stdout

    def list(self, directory: str) -> list[str]:
        out = self._m("mdir", "-b", f"::/{directory}")
        return sorted(Path(line.strip()).name for line in out.splitlines() if line.strip())

    def is_dir(self, directory: str) -> bool:
        try:
            self._m("mdir", "-b", f"::/{directory}")
        except Exception:  # noqa: BLE001 - mdir fails exactly when the directory is missing
            return False
        return True

    def mkdir(self, directory: str) -> None:
        parts = directory.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            if not self.is_dir(sub):
                self._m("mmd", f"::/{sub}")

    def delete(self, path: str) -> None:
        self._m("mdel", f"::/{path}")

    def move(self, src: str, dst: str) -> None:
        self._m("mmove", "-D", "o", f"::/{src}", f"::/{dst}")

    def write_text(self, path: str, text: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / Path(path).name
            local.write_text(text)
            os.utime(local, (self._epoch, self._epoch))  # -m keeps it: reproducible timestamps
            self._m("mcopy", "-o", "-m", str(local), f"::/{path}")

    def read_text(self, path: str) -> str:
        return self._m("mtype", f"::/{path}")

    def copy_in(self, local: Path, path: str) -> None:
        """Replace (or create) the ESP file ``path`` with the bytes of ``local``."""
        self._m("mcopy", "-o", "-m", str(local), f"::/{path}")

    def copy_out(self, path: str, local: Path) -> Path:
        """Copy the ESP file ``path`` to ``local`` (binary, as is); returns ``local``."""
        local.unlink(missing_ok=True)
        self._m("mcopy", "-n", f"::/{path}", str(local))
        return local


def install_slot_a(image: Path, *, version: str, uki: Path, cmdline: str, source_date_epoch: int) -> None:
    """Make ``uki`` (the sealed UKI of ``version``, :mod:`qx_build.sealing`) the ESP's only UKI and slot A's
    entry, with ``loader.conf``. mkosi's own copy (``EFI/Linux``, with the placeholder root hash) and the
    UKI of an earlier release (a derived test disk) are removed: no entry could boot them."""
    log.step("esp: slot A's UKI, boot entry and loader.conf")
    esp = EspImage(image, source_date_epoch=source_date_epoch)
    for directory in ("EFI/Linux", bootentry.UKI_DIR):
        for name in esp.list(directory) if esp.is_dir(directory) else []:
            if name.lower().endswith(".efi"):
                esp.delete(f"{directory}/{name}")
    esp.mkdir(bootentry.UKI_DIR)
    esp.copy_in(uki, bootentry.uki_path(version))
    esp.mkdir(bootentry.ENTRIES_DIR)
    esp.write_text(f"{bootentry.ENTRIES_DIR}/{bootentry.EntryName('a').filename}",
                   bootentry.render_entry(version=version, slot="a", base_cmdline=cmdline))
    esp.write_text(bootentry.LOADER_CONF, bootentry.render_loader_conf())
