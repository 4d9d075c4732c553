"""An ESP's FAT filesystem read and written with mtools, without mounting it.

``target`` is a block device or image file (``/dev/sda1``), or ``FILE@@OFFSET`` for a partition inside a
disk image (mtools' own syntax). The installer and the image build use it: they must work where the
kernel has no vfat driver or mounting is not allowed, and a FAT that is never mounted cannot be left
dirty by a power cut. Renames (``mmove``) are the switch points, as renames are on a mounted ESP; FAT
has no atomic rename either way, which is why an entry is written under a temp name first.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from qx_common import run as r
from qx_common.errors import ExternalError

_ENV = {"MTOOLS_SKIP_CHECK": "1"}


class FatFiles:
    """:class:`qx_update.esp.EspFiles` over mtools. ``mtime``: a fixed time for written files (reproducible
    images); None keeps the current time."""

    def __init__(self, target: str, *, mtime: int | None = None) -> None:
        self.target = target
        self.mtime = mtime

    def _m(self, tool: str, *args: str, check: bool = True) -> str:
        return r.run([tool, "-i", self.target, *args], env=_ENV, check=check).stdout

    def _entries(self, directory: str) -> list[tuple[str, bool]]:
        """(name, is_directory) of what ``directory`` holds; [] when it does not exist."""
        d = directory.strip("/")
        res = r.run(["mdir", "-i", self.target, "-b", "-a", f"::/{d}"], env=_ENV, check=False)
        if res.returncode != 0:
            return []
        out = []
        for line in res.stdout.splitlines():   # "::/dir/name", directories with a trailing "/"
            line = line.strip()
            if line:
                out.append((Path(line.rstrip("/")).name, line.endswith("/")))
        return out

    def names(self, directory: str) -> list[str]:
        return sorted(n for n, is_dir in self._entries(directory) if not is_dir)

    def read_text(self, path: str) -> str:
        return self._m("mtype", f"::/{path}")

    def exists(self, path: str) -> bool:
        parent, _, name = path.strip("/").rpartition("/")
        return any(n.lower() == name.lower() for n, _ in self._entries(parent))

    def mkdirs(self, directory: str) -> None:
        parts = directory.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            parent = "/".join(parts[:i - 1])
            if not any(n.lower() == parts[i - 1].lower() and d for n, d in self._entries(parent)):
                self._m("mmd", f"::/{sub}")

    def _put(self, local: Path, path: str) -> None:
        self.mkdirs(path.rpartition("/")[0]) if "/" in path.strip("/") else None
        if self.mtime is not None:
            os.utime(local, (self.mtime, self.mtime))
        self._m("mcopy", "-o", "-m", str(local), f"::/{path}")

    def write_temp(self, path: str, data: bytes) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "f"
            local.write_bytes(data)
            self._put(local, path)
        self.sync(path)

    def write(self, path: str, data: bytes) -> None:
        tmp = _tmp_name(path)
        self.write_temp(tmp, data)
        self.rename(tmp, path)

    def copy_in(self, src: Path, path: str) -> None:
        tmp = _tmp_name(path)
        with tempfile.TemporaryDirectory() as d:
            local = Path(d) / "f"
            os.link(src, local) if _same_fs(src, Path(d)) else local.write_bytes(src.read_bytes())
            self._put(local, tmp)
        self.sync(tmp)
        self.rename(tmp, path)

    def rename(self, src: str, dst: str) -> None:
        if self.exists(dst):
            self.remove(dst)
        self._m("mmove", "-D", "o", f"::/{src}", f"::/{dst}")
        self.sync(dst)

    def remove(self, path: str) -> None:
        if self.exists(path):
            self._m("mdel", f"::/{path}")

    def sync(self, directory: str) -> None:
        """mtools wrote through the page cache of the device: flush it to the medium."""
        try:
            fd = os.open(self.target.split("@@")[0], os.O_RDONLY)
        except OSError as e:
            raise ExternalError(f"{self.target}: cannot open to flush: {e.strerror}") from e
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _tmp_name(path: str) -> str:
    parent, _, name = path.rpartition("/")
    return f"{parent}/.{name}.tmp" if parent else f".{name}.tmp"


def _same_fs(a: Path, b: Path) -> bool:
    try:
        return a.stat().st_dev == b.stat().st_dev
    except OSError:
        return False
