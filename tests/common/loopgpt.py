"""A real GPT on a loop device, and the ``/dev/disk/by-partuuid`` links udev would make for it.

udev does not run on the test machines, and their kernel may not parse GPTs (no ``CONFIG_EFI_PARTITION``:
``losetup -P`` then adds no partitions). So the partitions are added with ``partx -a`` (BLKPG, as
tests/updates/test_loopdev.py always did), and :meth:`LoopGpt.link_by_partuuid` writes the links udev's
``60-persistent-storage.rules`` would: one per partition, named by its GPT unique GUID in lowercase,
pointing at the partition's device node. The table is read back with ``sfdisk --json`` (the tool an
operator uses), never through the code under test. A test that changes the table must not make the
kernel re-read it (``sfdisk --no-reread --no-tell-kernel``, as qx_update.seal does): a kernel without
GPT parsing would drop partx's partitions.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LoopGpt:
    dev: str                     # /dev/loopN
    nodes: dict[str, Path]       # GPT name -> partition device node

    def table(self) -> list[dict[str, str]]:
        out = subprocess.run(["sfdisk", "--json", self.dev], capture_output=True, text=True, check=True).stdout
        return json.loads(out)["partitiontable"]["partitions"]  # type: ignore[no-any-return]

    def uuids(self) -> dict[str, str]:
        """GPT name -> partition UUID, lowercase (as udev and qx_common.verity write them)."""
        return {p["name"]: p["uuid"].lower() for p in self.table()}

    def link_by_partuuid(self, where: Path) -> Path:
        """(Re)make ``where`` as udev's by-partuuid directory for this disk; returns it."""
        where.mkdir(parents=True, exist_ok=True)
        for old in where.iterdir():
            old.unlink()
        for p in self.table():
            (where / p["uuid"].lower()).symlink_to(p["node"])
        return where


@contextlib.contextmanager
def loop_gpt(img: Path, partitions: list[tuple[str, str]], *, size_mib: int) -> Iterator[LoopGpt]:
    """A sparse ``img`` of ``size_mib`` with a GPT of ``partitions`` ((name, sfdisk size) in order),
    attached as a loop device with its partition nodes; detached afterwards."""
    with img.open("wb") as f:
        f.truncate(size_mib * 1024 * 1024)
    script = "label: gpt\n" + "".join(f"size={size}, name={name}\n" for name, size in partitions)
    subprocess.run(["sfdisk", "-q", str(img)], input=script, text=True, check=True)
    dev = subprocess.run(["losetup", "-f", "--show", "-P", str(img)], capture_output=True, text=True,
                         check=True).stdout.strip()
    try:
        nodes = {name: Path(f"{dev}p{i}") for i, (name, _) in enumerate(partitions, 1)}
        subprocess.run(["udevadm", "settle"], check=False, capture_output=True)
        if not all(p.exists() for p in nodes.values()):
            subprocess.run(["partx", "-a", dev], check=False, capture_output=True)
        assert all(p.exists() for p in nodes.values()), "loop partitions did not appear"
        yield LoopGpt(dev, nodes)
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)
