"""Power cut: the real CLI is SIGKILLed at every step (QX_UPDATE_TEST_CRASH_AT), then checked.

After a kill before the switch, slot A is still the default and byte-for-byte intact, slot B has no
boot entry, and a new ``apply`` succeeds. A kill mid-download leaves a synced partial file that the
next run resumes with an HTTP Range request.
"""

from __future__ import annotations

import signal

import pytest

from qx_update.crashpoint import ENV
from tests.updates.conftest import Host, payload, sha
from tests.updates.httpserver import Served
from tests.updates.tufrepo import TufRepo

ALL = ["dev", "beta", "stable"]
BEFORE_SWITCH = ["download", "downloaded", "entry-removed", "write", "written", "switch", "entry-tmp"]
# A verity release passes one more step: its tree is written and its partitions' UUIDs set.
VERITY_BEFORE_SWITCH = [*BEFORE_SWITCH[:5], "sealed", *BEFORE_SWITCH[5:]]


@pytest.mark.parametrize("point", BEFORE_SWITCH)
def test_kill_before_switch_keeps_old_slot(host: Host, repo: TufRepo, server: Served, point: str) -> None:
    rel = repo.add_release("1.1.0", slot_bytes=payload(30), channels=ALL)
    before = host.fingerprint()
    proc = host.run("apply", env={ENV: point}, check=False)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr)
    assert sha(host.slots["a"]) == before["slot_a"]
    assert [n for n in host.entries() if n.endswith(".conf")] == ["quantix-a.conf"]
    st = host.json("status")
    assert st["default_slot"] == "a" and st["slots"]["b"]["version"] is None
    # A new apply completes (resuming where it can) and the update is then in place.
    server.requests.clear()
    res = host.json("apply")
    assert res["applied"]["version"] == "1.1.0" and res["next_boot"] == "b"
    assert host.slots["b"].read_bytes()[: len(rel.slot_bytes)] == rel.slot_bytes
    assert not [p for p in (host.esp / "EFI/quantix").iterdir() if p.name.startswith(".")]
    assert not list((host.esp / "loader/entries").glob(".*"))
    if point == "download":
        ranges = [r for path, r, status in server.requests if path.endswith(".root.erofs.zst")]
        assert ranges and ranges[0] and ranges[0].startswith("bytes=") and ranges[0] != "bytes=0-", ranges
        assert len(ranges) == 1, f"the resumed download (kept prefix re-hashed) verified without a refetch: {ranges}"


def test_kill_after_switch_boots_new_slot_and_state_recovers(host: Host, repo: TufRepo) -> None:
    repo.add_release("1.1.0", slot_bytes=payload(31), channels=ALL)
    proc = host.run("apply", env={ENV: "switched"}, check=False)
    assert proc.returncode == -signal.SIGKILL
    st = host.json("status")
    assert st["default_slot"] == "b" and st["slots"]["b"]["tries_left"] == 3
    assert sha(host.slots["a"]) == host.fingerprint()["slot_a"]
    again = host.json("apply")
    assert again["applied"] is None and "already installed" in again["message"]


@pytest.mark.parametrize("point", [*BEFORE_SWITCH, "switched"])
def test_a_kill_at_any_step_then_apply_reboot_and_bless_converges(host: Host, repo: TufRepo, point: str) -> None:
    """Every cut point ends in the state of an uninterrupted apply: pending recorded, floor raised after
    the blessed boot, download cache empty."""
    from tests.updates.test_bootcount import Loader

    repo.add_release("1.1.0", slot_bytes=payload(32), channels=ALL, security_epoch=3)
    proc = host.run("apply", env={ENV: point}, check=False)
    assert proc.returncode == -signal.SIGKILL
    res = host.json("apply")
    st = host.json("status")
    assert st["pending"] is not None and st["pending"]["version"] == "1.1.0", (res, st["pending"])
    cache = host.state_dir / "downloads"
    assert not cache.exists() or not list(cache.iterdir()), "the download cache is removed"
    loader = Loader(host.esp)
    assert loader.boot() == "b"
    loader.bless("b")
    host.write_config(running="b")
    out = host.json("blessed")
    assert out["blessed"] and out["security_epoch_floor"] == 3
    assert host.json("status")["pending"] is None


@pytest.mark.parametrize("point", VERITY_BEFORE_SWITCH)
def test_a_verity_apply_killed_before_the_switch_keeps_the_old_slot_then_completes(
        host: Host, repo: TufRepo, point: str) -> None:
    """The same cuts for a verity release (verity partitions as files: the tree is written, there are no
    UUIDs to set): slot A and its entry stay, and the next apply leaves slot B's partition holding the
    tree whose root hash its UKI boots."""
    import hashlib
    import io

    from qx_common import verity

    host.with_verity()
    rel = repo.add_release("1.1.0", slot_bytes=payload(33), channels=ALL, verity=True)
    before = host.fingerprint()
    proc = host.run("apply", env={ENV: point}, check=False)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr)
    assert sha(host.slots["a"]) == before["slot_a"]
    assert [n for n in host.entries() if n.endswith(".conf")] == ["quantix-a.conf"]
    assert host.json("status")["default_slot"] == "a"
    res = host.json("apply")
    assert res["applied"]["version"] == "1.1.0" and res["next_boot"] == "b"
    tree = verity.build(io.BytesIO(rel.slot_bytes), len(rel.slot_bytes),
                        verity.params_for(hashlib.sha256(rel.slot_bytes).hexdigest()))
    assert tree.roothash == rel.roothash
    assert host.verity is not None and host.verity["b"].read_bytes()[: len(tree.image)] == tree.image
    assert host.verity["a"].read_bytes() == b""
    assert f"options {rel.cmdline}\n" in next((host.esp / "loader/entries").glob("quantix-b*.conf")).read_text()
