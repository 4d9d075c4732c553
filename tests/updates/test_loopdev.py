"""The same apply with slots that are real partitions of a GPT image on a loop device (root only).

The disk has the verity layout (root-a, root-a-verity, root-b, root-b-verity), or the one before it
(root-a, root-b: a host installed before verity). What an apply did is read back with the tools an
operator has: ``sfdisk --json`` for the partition UUIDs, ``veritysetup verify`` for the hash tree.
"""

from __future__ import annotations

import hashlib
import signal
import subprocess
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from qx_common import verity
from qx_common.slot import booted_slot
from qx_update.crashpoint import ENV
from tests.common.loopgpt import LoopGpt, loop_gpt
from tests.updates.conftest import Host, payload, sha
from tests.updates.httpserver import Served
from tests.updates.tufrepo import TufRepo

pytestmark = pytest.mark.root

VERITY_LAYOUT = [("root-a", "8MiB"), ("root-a-verity", "1MiB"), ("root-b", "8MiB"), ("root-b-verity", "1MiB")]
OLD_LAYOUT = [("root-a", "8MiB"), ("root-b", "8MiB")]


@pytest.fixture
def loop_disk(tmp_path: Path) -> Iterator[Callable[[list[tuple[str, str]]], LoopGpt]]:
    """``loop_disk(layout)``: a loop-device GPT whose root-a holds the factory release's bytes."""
    with ExitStack() as stack:
        def make(layout: list[tuple[str, str]]) -> LoopGpt:
            disk = stack.enter_context(loop_gpt(tmp_path / "disk.img", layout, size_mib=24))
            disk.nodes["root-a"].write_bytes(b"FACTORY-1.0.0" * 1000)
            return disk

        yield make


def _slots(disk: LoopGpt) -> dict[str, Path]:
    return {s: disk.nodes[f"root-{s}"] for s in ("a", "b")}


def _verity(disk: LoopGpt) -> dict[str, Path]:
    return {s: disk.nodes[f"root-{s}-verity"] for s in ("a", "b")}


def test_apply_into_loop_partition(host: Host, repo: TufRepo, loop_disk: Callable[..., LoopGpt]) -> None:
    """A release before verity, on the verity layout: as before — its entry names root-b, and neither
    the verity partitions nor any partition UUID are touched."""
    disk = loop_disk(VERITY_LAYOUT)
    host.slots = _slots(disk)
    host.with_verity(_verity(disk))
    rel = repo.add_release("1.1.0", slot_bytes=payload(50), channels=["stable"])
    before_a, uuids, verity_b = sha(host.slots["a"]), disk.uuids(), sha(disk.nodes["root-b-verity"])
    res = host.json("apply")
    assert res["applied"]["version"] == "1.1.0" and res["slot"] == "b"
    with host.slots["b"].open("rb") as f:
        assert hashlib.sha256(f.read(len(rel.slot_bytes))).hexdigest() == hashlib.sha256(rel.slot_bytes).hexdigest()
    assert sha(host.slots["a"]) == before_a
    assert disk.uuids() == uuids and sha(disk.nodes["root-b-verity"]) == verity_b
    assert "options root=PARTLABEL=root-b " in (host.esp / "loader/entries/quantix-b+3.conf").read_text()


def _assert_sealed(disk: LoopGpt, slot: str, roothash: str, size: int) -> None:
    """The slot's verity partition holds the tree of its first ``size`` bytes (cryptsetup's own check, and
    byte for byte what qx_common.verity makes), and both partitions carry the UUIDs the root hash names."""
    data, hashdev = disk.nodes[f"root-{slot}"], disk.nodes[f"root-{slot}-verity"]
    res = subprocess.run(["veritysetup", "verify", str(data), str(hashdev), roothash], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    with data.open("rb") as f:
        sha256 = hashlib.sha256(f.read(size)).hexdigest()
        f.seek(0)
        tree = verity.build(f, size, verity.params_for(sha256))
    with hashdev.open("rb") as f:
        assert f.read(len(tree.image)) == tree.image
    uuids = disk.uuids()
    assert (uuids[f"root-{slot}"], uuids[f"root-{slot}-verity"]) == verity.partuuids(roothash)


def test_a_verity_release_is_sealed_into_the_slot_its_uki_boots(host: Host, repo: TufRepo, tmp_path: Path,
                                                                loop_disk: Callable[..., LoopGpt]) -> None:
    disk = loop_disk(VERITY_LAYOUT)
    host.slots = _slots(disk)
    host.with_verity(_verity(disk))
    rel = repo.add_release("1.1.0", slot_bytes=payload(51), channels=["stable"], verity=True)
    assert rel.roothash is not None
    before_a = {n: disk.uuids()[n] for n in ("root-a", "root-a-verity")}
    a_bytes = sha(host.slots["a"])
    res = host.json("apply")
    assert res["applied"]["version"] == "1.1.0" and res["slot"] == "b" and res["next_boot"] == "b"
    _assert_sealed(disk, "b", rel.roothash, len(rel.slot_bytes))
    assert {n: disk.uuids()[n] for n in before_a} == before_a and sha(host.slots["a"]) == a_bytes
    # The entry passes the UKI's own command line: the same words Secure Boot would boot.
    entry = (host.esp / "loader/entries/quantix-b+3.conf").read_text()
    assert f"options {rel.cmdline}\n" in entry and "PARTLABEL" not in entry
    # After the reboot, the initrd finds the slot by the root hash: the booted slot is B.
    links = disk.link_by_partuuid(tmp_path / "by-partuuid")
    assert booted_slot(rel.cmdline, by_partuuid=links) == "b"


def test_a_verity_release_is_refused_by_a_host_without_verity_partitions(
        host: Host, repo: TufRepo, server: Served, loop_disk: Callable[..., LoopGpt]) -> None:
    """Installed before verity: refused before the root payload is fetched and before anything is
    written; the hint names the way out. A release before verity still installs."""
    disk = loop_disk(OLD_LAYOUT)
    host.slots = _slots(disk)
    host.with_verity({s: host.dir / "by-partlabel" / f"root-{s}-verity" for s in ("a", "b")})  # udev's, absent
    disk.nodes["root-b"].write_bytes(b"OLD-B" * 1000)
    repo.add_release("1.1.0", slot_bytes=payload(52), channels=["stable"], verity=True)
    before = (host.fingerprint(), sha(host.slots["b"]), disk.uuids())
    res = host.run("apply", check=False)
    assert res.returncode == 3, res.stderr
    assert "boots a dm-verity root, but slot B has no verity partition" in res.stderr
    assert "reinstall from the ISO with 'keep data'" in res.stderr
    assert (host.fingerprint(), sha(host.slots["b"]), disk.uuids()) == before
    assert not [p for p, _, _ in server.requests if p.endswith(".root.erofs.zst")], "the payload was fetched"
    # A newer release before verity installs on this disk as it always did.
    repo.add_release("1.2.0", slot_bytes=payload(53), channels=["stable"])
    assert host.json("apply")["applied"]["version"] == "1.2.0"


def test_a_verity_partition_too_small_for_the_tree_is_refused_before_writing(
        host: Host, repo: TufRepo, loop_disk: Callable[..., LoopGpt]) -> None:
    disk = loop_disk([("root-a", "8MiB"), ("root-a-verity", "16KiB"), ("root-b", "8MiB"), ("root-b-verity", "16KiB")])
    host.slots = _slots(disk)
    host.with_verity(_verity(disk))
    rel = repo.add_release("1.1.0", slot_bytes=payload(54), channels=["stable"], verity=True)
    before = (host.fingerprint(), sha(host.slots["b"]), disk.uuids())
    res = host.run("apply", check=False)
    assert res.returncode == 3 and f"its hash tree needs {verity.tree_size(len(rel.slot_bytes))}" in res.stderr, res.stderr
    assert (host.fingerprint(), sha(host.slots["b"]), disk.uuids()) == before


@pytest.mark.parametrize("point", ["written", "sealed"])
def test_a_verity_apply_killed_before_the_switch_boots_nothing_new(
        host: Host, repo: TufRepo, loop_disk: Callable[..., LoopGpt], point: str) -> None:
    """Killed after the write: slot B has random UUIDs (unsealed before the write: no root hash finds a
    half-written slot); killed after sealing: B has the release's UUIDs but no entry boots it. Either
    way A stays the default, and the next apply completes."""
    disk = loop_disk(VERITY_LAYOUT)
    host.slots = _slots(disk)
    host.with_verity(_verity(disk))
    rel = repo.add_release("1.1.0", slot_bytes=payload(55), channels=["stable"], verity=True)
    assert rel.roothash is not None
    old = disk.uuids()
    proc = host.run("apply", env={ENV: point}, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert [n for n in host.entries() if n.endswith(".conf")] == ["quantix-a.conf"]
    now, sealed = disk.uuids(), verity.partuuids(rel.roothash)
    assert (now["root-a"], now["root-a-verity"]) == (old["root-a"], old["root-a-verity"])
    b = (now["root-b"], now["root-b-verity"])
    assert (b == sealed) if point == "sealed" else (b != sealed and b != (old["root-b"], old["root-b-verity"]))
    assert host.json("apply")["applied"]["version"] == "1.1.0"
    _assert_sealed(disk, "b", rel.roothash, len(rel.slot_bytes))


@pytest.mark.parametrize("victim", ["root-a", "root-a-verity", "root-b"])
def test_a_verity_path_naming_another_slot_partition_by_another_name_is_refused(
        host: Host, repo: TufRepo, loop_disk: Callable[..., LoopGpt], victim: str) -> None:
    """[verity] b given as another name of the running slot, of the running slot's hash partition, or of
    slot B itself (a udev link, /dev/sdX — the config's own check compares the paths as written): refused
    before anything is written. Before, unseal gave that partition a random UUID and seal wrote slot B's
    hash tree over it — the running root's own data or hash tree."""
    disk = loop_disk(VERITY_LAYOUT)
    host.slots = _slots(disk)
    alias = host.dir / "by-id" / f"alias-of-{victim}"
    alias.parent.mkdir()
    alias.symlink_to(disk.nodes[victim])
    host.with_verity({"a": disk.nodes["root-a-verity"], "b": alias})
    repo.add_release("1.1.0", slot_bytes=payload(56), channels=["stable"], verity=True)
    before = (host.fingerprint(), sha(disk.nodes[victim]), sha(disk.nodes["root-a-verity"]), disk.uuids())
    res = host.run("apply", check=False)
    assert res.returncode == 2, res.stderr
    assert "'verity.b'" in res.stderr and "[verity]" in res.stderr, res.stderr
    assert (host.fingerprint(), sha(disk.nodes[victim]), sha(disk.nodes["root-a-verity"]), disk.uuids()) == before


def test_a_verity_path_naming_the_data_partition_is_refused_before_anything_is_fetched(
        host: Host, repo: TufRepo, server: Served, loop_disk: Callable[..., LoopGpt]) -> None:
    """[verity] b = the data partition (a typo in update.toml): a partition that is written as slot B's
    hash partition must be the GPT partition named root-b-verity. Before, sealing gave the data partition
    a random UUID and wrote the hash tree over its first blocks (the ext4 superblock: the VMs)."""
    disk = loop_disk([*VERITY_LAYOUT, ("quantix-data", "2MiB")])
    host.slots = _slots(disk)
    data = disk.nodes["quantix-data"]
    data.write_bytes(b"VM DATA" * 200000)
    host.with_verity({"a": disk.nodes["root-a-verity"], "b": data})
    repo.add_release("1.1.0", slot_bytes=payload(57), channels=["stable"], verity=True)
    before = (host.fingerprint(), sha(data), sha(host.slots["b"]), disk.uuids())
    res = host.run("apply", check=False)
    assert res.returncode == 2, res.stderr
    assert "'verity.b'" in res.stderr and "quantix-data" in res.stderr and "root-b-verity" in res.stderr, res.stderr
    assert (host.fingerprint(), sha(data), sha(host.slots["b"]), disk.uuids()) == before
    assert not [p for p, _, _ in server.requests if p.endswith(".root.erofs.zst")], "the payload was fetched"
