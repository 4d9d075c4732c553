"""GET /v1/hardware disks on real sysfs: a GPT image on a loop device, its partitions, by-id links (root only).

The image is made with sfdisk, which also reports the layout the inventory must match. Partition
file-system facts come from udev when udevd has recorded the device, else from blkid; either way
they must be the real ones (a vfat label and GPT names with spaces, to exercise udev's \\x20 escapes).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyudev
import pytest

from qx_node import hardware
from tests.node.conftest import Api

MiB = 1024 * 1024


@dataclass
class LoopDisk:
    dev: str  # /dev/loopN
    sizes: list[int]  # partition sizes in bytes, as sfdisk laid them out


@pytest.fixture
def gpt_loop(tmp_path: Path) -> Iterator[LoopDisk]:
    img = tmp_path / "disk.img"
    with img.open("wb") as f:
        f.truncate(64 * MiB)  # sparse
    subprocess.run(["sfdisk", "-q", str(img)], input='label: gpt\nsize=16MiB, name="qx efi"\nname=qx-data\n',
                   text=True, check=True)
    table = json.loads(subprocess.run(["sfdisk", "-J", str(img)], capture_output=True, text=True,
                                      check=True).stdout)["partitiontable"]
    sizes = [p["size"] * table.get("sectorsize", 512) for p in table["partitions"]]
    dev = subprocess.run(["losetup", "-f", "--show", "-P", str(img)], capture_output=True, text=True,
                         check=True).stdout.strip()
    try:
        parts = [Path(f"{dev}p{i}") for i in (1, 2)]
        subprocess.run(["udevadm", "settle"], check=False, capture_output=True)
        if not all(p.exists() for p in parts):
            # Kernels without GPT parsing (minimal VM kernels) leave the scan to userspace.
            subprocess.run(["partx", "-a", dev], check=False, capture_output=True)
        assert all(p.exists() for p in parts), "loop partitions did not appear"
        subprocess.run(["mkfs.vfat", "-n", "QX DATA", str(parts[1])], check=True, capture_output=True)
        subprocess.run(["udevadm", "settle"], check=False, capture_output=True)
        yield LoopDisk(dev, sizes)
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


@pytest.mark.root
def test_loop_disk_with_partitions_and_by_id(gpt_loop: LoopDisk, tmp_path: Path) -> None:
    name = os.path.basename(gpt_loop.dev)
    # A by-id directory as udev lays it out: links to the disk and a partition, one to another
    # device, one dangling.
    by_id = tmp_path / "by-id"
    by_id.mkdir()
    (by_id / "virtio-qx-test").symlink_to(gpt_loop.dev)
    (by_id / "virtio-qx-test-part2").symlink_to(f"{gpt_loop.dev}p2")
    (by_id / "virtio-other").symlink_to("/dev/null")
    (by_id / "virtio-gone").symlink_to(tmp_path / "nothing")

    skip = tuple(p for p in hardware.SKIP_DISKS if p != "loop")
    found = {d["name"]: d for d in hardware.disks(pyudev.Context(), skip=skip, by_id_dir=by_id)}
    disk = found[name]
    assert disk["path"] == gpt_loop.dev and disk["size_bytes"] == 64 * MiB
    assert disk["by_id"] == [str(by_id / "virtio-qx-test")]
    p1, p2 = disk["partitions"]
    assert [p1["size_bytes"], p2["size_bytes"]] == gpt_loop.sizes and p1["size_bytes"] == 16 * MiB
    assert (p1["name"], p1["path"], p1["number"]) == (f"{name}p1", f"{gpt_loop.dev}p1", 1)
    assert (p1["partlabel"], p1["fs_type"], p1["label"], p1["by_id"]) == ("qx efi", "", "", [])
    assert (p2["number"], p2["partlabel"], p2["fs_type"], p2["label"]) == (2, "qx-data", "vfat", "QX DATA")
    assert p2["by_id"] == [str(by_id / "virtio-qx-test-part2")]


@pytest.mark.root
def test_api_lists_disks_with_partitions_but_not_loop_devices(gpt_loop: LoopDisk, api: Api) -> None:
    disks = api.get("/v1/hardware", headers=api.hdr).json()["disks"]
    assert os.path.basename(gpt_loop.dev) not in [d["name"] for d in disks]
    for d in disks:
        assert isinstance(d["by_id"], list) and isinstance(d["partitions"], list), d
        assert all(p["size_bytes"] > 0 and p["path"].startswith("/dev/") for p in d["partitions"]), d
