"""The same apply with slots that are real partitions of a GPT image on a loop device (root only)."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.updates.conftest import Host, payload, sha
from tests.updates.tufrepo import TufRepo

pytestmark = pytest.mark.root


@pytest.fixture
def loop_slots(tmp_path: Path) -> Iterator[dict[str, Path]]:
    img = tmp_path / "disk.img"
    with img.open("wb") as f:
        f.truncate(24 * 1024 * 1024)
    subprocess.run(["sfdisk", "-q", str(img)], input="label: gpt\nsize=8MiB, name=root-a\nsize=8MiB, name=root-b\n",
                   text=True, check=True)
    dev = subprocess.run(["losetup", "-f", "--show", "-P", str(img)], capture_output=True, text=True,
                         check=True).stdout.strip()
    try:
        parts = {"a": Path(f"{dev}p1"), "b": Path(f"{dev}p2")}
        subprocess.run(["udevadm", "settle"], check=False, capture_output=True)
        if not all(p.exists() for p in parts.values()):
            subprocess.run(["partx", "-a", dev], check=False, capture_output=True)
        assert all(p.exists() for p in parts.values()), "loop partitions did not appear"
        parts["a"].write_bytes(b"FACTORY-1.0.0" * 1000)
        yield parts
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


def test_apply_into_loop_partition(host: Host, repo: TufRepo, loop_slots: dict[str, Path]) -> None:
    host.slots = loop_slots
    host.write_config()
    rel = repo.add_release("1.1.0", slot_bytes=payload(50), channels=["stable"])
    before_a = sha(loop_slots["a"])
    res = host.json("apply")
    assert res["applied"]["version"] == "1.1.0" and res["slot"] == "b"
    with loop_slots["b"].open("rb") as f:
        assert hashlib.sha256(f.read(len(rel.slot_bytes))).hexdigest() == hashlib.sha256(rel.slot_bytes).hexdigest()
    assert sha(loop_slots["a"]) == before_a
