"""Each attack on the update path is refused, and the running slot and boot entries stay as they were.

The repository is real TUF metadata served over HTTP on 127.0.0.1; the client is the real CLI.
Refusals of tampered data exit with 5 (VerificationError); a release the host must not take is simply
not chosen (``check`` says why), so ``apply`` installs nothing.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from qx_update.crashpoint import ENV
from tests.updates.conftest import Host, payload
from tests.updates.httpserver import Served
from tests.updates.tufrepo import TufRepo

ALL = ["dev", "beta", "stable"]


def refused(host: Host, *words: str) -> str:
    before = host.fingerprint()
    proc = host.run("apply", check=False)
    assert proc.returncode == 5, proc.stderr
    assert "Traceback" not in proc.stderr
    for w in words:
        assert w in proc.stderr, proc.stderr
    assert host.fingerprint() == before
    assert host.json("status")["default_slot"] == "a"
    st = host.json("status")
    assert st["last_error"] and st["slots"]["b"]["version"] is None
    return proc.stderr


def not_chosen(host: Host, reason: str) -> None:
    before = host.fingerprint()
    chk = host.json("check")
    assert chk["available"] is None
    assert any(reason in s["reason"] for s in chk["skipped"]), chk["skipped"]
    res = host.json("apply")
    assert res["applied"] is None
    assert host.fingerprint() == before


def test_tampered_artifact(host: Host, repo: TufRepo) -> None:
    rel = repo.add_release("1.1.0", slot_bytes=payload(10), channels=ALL)
    data = bytearray(rel.root_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    rel.root_file.write_bytes(bytes(data))
    refused(host, "tampered")
    assert not list((host.state_dir / "downloads").glob("*.part")), "a bad download is not kept for resuming"


def test_oversized_artifact_endless_data(host: Host, repo: TufRepo) -> None:
    rel = repo.add_release("1.1.0", slot_bytes=payload(11), channels=ALL)
    with rel.root_file.open("ab") as f:
        f.write(b"\0" * (3 * 1024 * 1024))
    refused(host, "more than the signed")


def test_older_release_signed_validly_is_not_installed(host: Host, repo: TufRepo) -> None:
    repo.add_release("0.9.0", slot_bytes=payload(12), channels=ALL)
    not_chosen(host, "not newer than the running 1.0.0")


def test_metadata_rollback_to_older_signed_timestamp(host: Host, repo: TufRepo) -> None:
    old = repo.remember_timestamp()
    repo.add_release("1.1.0", slot_bytes=payload(13), channels=["dev"])   # not for this host
    host.json("check")                                                     # the host has seen the newer state
    repo.metadata_rollback_attack(old)
    refused(host, "rollback attack")


def test_expired_timestamp_freeze(host: Host, repo: TufRepo) -> None:
    repo.add_release("1.1.0", slot_bytes=payload(14), channels=ALL, commit=False)
    repo.freeze_attack()
    refused(host, "expired")


def test_mismatched_snapshot_mix_and_match(host: Host, repo: TufRepo) -> None:
    repo.add_release("1.1.0", slot_bytes=payload(15), channels=ALL, commit=False)
    repo.stale_targets_attack()
    refused(host, "version")


def test_bad_signature(host: Host, repo: TufRepo) -> None:
    repo.add_release("1.1.0", slot_bytes=payload(16), channels=ALL, commit=False)
    repo.bad_signature_attack()
    refused(host, "signature")


def test_release_of_another_channel(host: Host, repo: TufRepo) -> None:
    repo.add_release("1.1.0", slot_bytes=payload(17), channels=["dev", "beta"])
    not_chosen(host, "not on channel stable")


def test_epoch_below_floor(host: Host, repo: TufRepo) -> None:
    host.state_dir.mkdir(parents=True, exist_ok=True)
    (host.state_dir / "state.json").write_text(json.dumps({"format": 1, "security_epoch_floor": 3}))
    repo.add_release("1.1.0", slot_bytes=payload(18), channels=ALL, security_epoch=2)
    not_chosen(host, "below this host's floor 3")


def test_slot_too_small(host: Host, repo: TufRepo) -> None:
    repo.add_release("1.1.0", slot_bytes=payload(19), channels=ALL, slot_size=64 * 1024 * 1024)
    not_chosen(host, "the inactive slot has")


def test_payload_larger_than_signed_slot_size_zstd_bomb(host: Host, repo: TufRepo) -> None:
    # The signed slot_size is smaller than what the payload decompresses to: stopped while writing.
    repo.add_release("1.1.0", slot_bytes=payload(20), channels=ALL, slot_size=1024 * 1024)
    refused(host, "decompresses to more than the signed")


@pytest.mark.parametrize("fraction, eligible", [("0", False), ("1", True)])
def test_staged_rollout_fraction_from_signed_metadata(host: Host, repo: TufRepo, fraction: str, eligible: bool) -> None:
    repo.add_release("1.1.0", slot_bytes=payload(21), channels=ALL,
                     rollout={"fraction": fraction, "start": "2020-01-01T00:00:00Z", "paused": False})
    chk = host.json("check")
    assert (chk["available"] is not None) == eligible


def _interrupted_download(host: Host) -> Path:
    """Kill the client mid-download; return the partial file it leaves for resuming."""
    proc = host.run("apply", env={ENV: "download"}, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    parts = list((host.state_dir / "downloads").glob("*.part"))
    assert len(parts) == 1 and parts[0].stat().st_size > 0
    return parts[0]


def test_corrupted_partial_download_is_fetched_again_from_zero(host: Host, repo: TufRepo, server: Served) -> None:
    """The hash runs over the kept prefix too: a prefix damaged on disk is caught, not installed."""
    rel = repo.add_release("1.1.0", slot_bytes=payload(12), channels=ALL)
    part = _interrupted_download(host)
    with part.open("r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    server.requests.clear()
    res = host.json("apply")
    assert res["applied"]["version"] == "1.1.0"
    assert host.slots["b"].read_bytes()[: len(rel.slot_bytes)] == rel.slot_bytes
    ranges = [r for path, r, _ in server.requests if path.endswith(".root.erofs.zst")]
    assert len(ranges) == 2 and ranges[0].startswith("bytes=") and ranges[0] != "bytes=0-" and not ranges[1], ranges


def test_tampered_tail_after_resume_is_refused(host: Host, repo: TufRepo) -> None:
    """A resumed download whose new bytes are tampered is refused before any slot write."""
    rel = repo.add_release("1.1.0", slot_bytes=payload(13), channels=ALL)
    _interrupted_download(host)
    data = bytearray(rel.root_file.read_bytes())
    data[-10] ^= 0xFF
    rel.root_file.write_bytes(bytes(data))
    refused(host, "tampered")
    assert not list((host.state_dir / "downloads").glob("*.part"))
