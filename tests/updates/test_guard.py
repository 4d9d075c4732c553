"""qx-update never writes the slot the system runs from — also when the root is a dm-verity device over
it (/dev/mapper/root on root-a), where the slot is a device *below* the root's. Device-mapper does not run
here, so the stacking is given as the kernel shows it in sysfs (``/sys/dev/block/MAJ:MIN/slaves/*/dev``),
over a real loop device as the slot."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from qx_common.errors import InternalError
from qx_update import slots

pytestmark = pytest.mark.root


@pytest.fixture
def loop(tmp_path: Path) -> Iterator[Path]:
    img = tmp_path / "slot.img"
    img.write_bytes(b"\0" * (1 << 20))
    dev = subprocess.run(["losetup", "-f", "--show", str(img)], capture_output=True, text=True, check=True).stdout.strip()
    try:
        yield Path(dev)
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


def _sysfs(tmp_path: Path, root_dev: int, below: list[int]) -> Path:
    """``/sys/dev/block`` where the device ``root_dev`` is stacked on ``below`` (a dm device over a partition)."""
    sys_block = tmp_path / "sys-dev-block"
    node = sys_block / f"{os.major(root_dev)}:{os.minor(root_dev)}" / "slaves"
    node.mkdir(parents=True)
    for i, dev in enumerate(below):
        d = tmp_path / f"slave{i}"
        d.mkdir()
        (d / "dev").write_text(f"{os.major(dev)}:{os.minor(dev)}\n")
        (node / f"part{i}").symlink_to(d)
    return sys_block


def test_a_slot_below_the_verity_root_is_refused(tmp_path: Path, loop: Path) -> None:
    root = tmp_path  # the "root filesystem": its st_dev stands for /dev/mapper/root
    sys_block = _sysfs(tmp_path, os.stat(root).st_dev, [os.stat(loop).st_rdev])
    with pytest.raises(InternalError, match="built on it"):
        slots.guard_not_running(loop, tmp_path / "other-slot", root=root, sys_block=sys_block)


def test_a_slot_beside_the_verity_root_is_written(tmp_path: Path, loop: Path) -> None:
    other = os.makedev(7, 250)  # some other partition holds the running root
    sys_block = _sysfs(tmp_path, os.stat(tmp_path).st_dev, [other])
    slots.guard_not_running(loop, tmp_path / "other-slot", root=tmp_path, sys_block=sys_block)


def test_a_verity_partition_below_the_verity_root_is_refused(tmp_path: Path, loop: Path) -> None:
    """[verity] b naming the running root's hash device (/dev/mapper/root is built on it too): sealing
    slot B would write B's tree over the tree the running root is verified against."""
    sys_block = _sysfs(tmp_path, os.stat(tmp_path).st_dev, [os.makedev(7, 250), os.stat(loop).st_rdev])
    with pytest.raises(InternalError, match="built on it"):
        slots.guard_verity(loop, field="verity.b", label="root-b-verity", slot=tmp_path / "slot-b",
                           running=tmp_path / "slot-a", running_verity=tmp_path / "verity-a", root=tmp_path,
                           sys_block=sys_block)
