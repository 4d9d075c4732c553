"""The TUF repository module on its own: every operation is checked by python-tuf's ngclient over HTTP."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from tuf.api.exceptions import ExpiredMetadataError

from qx_common.errors import UserError
from qx_update_server import release
from qx_update_server.repository import Repository, utcnow

from .conftest import verify_repo


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    r = Repository(tmp_path / "data")
    r.init(root_keys=3, threshold=2)
    return r


def publish(repo: Repository, build: Path, channel: str = "dev", **kw: object) -> None:
    repo.publish(release.load([build]), channel=channel, **kw)


def test_empty_repository_verifies(repo, static_server, tmp_path):
    url = static_server(repo.repo_dir)
    assert verify_repo(url, repo.root_bytes(1), tmp_path) == {}
    # root keys live outside the served directory
    assert not any(p.suffix == ".pem" for p in repo.repo_dir.rglob("*"))
    assert len(list((tmp_path / "data" / "root-keys").glob("*.pem"))) == 3


def test_publish_promote_rollout_yank(repo, static_server, tmp_path, make_release):
    url = static_server(repo.repo_dir)
    publish(repo, make_release("0.2.0"), notes="first")
    got = verify_repo(url, repo.root_bytes(1), tmp_path)
    assert set(got) == {"0.2.0/quantix-os_0.2.0.root.erofs.zst", "0.2.0/quantix-os_0.2.0.efi"}
    q = got["0.2.0/quantix-os_0.2.0.root.erofs.zst"]
    manifest = json.loads((tmp_path / "builds/build-0.2.0/quantix-os_0.2.0.manifest.json").read_text())
    assert q["channels"] == ["dev"] and q["artifact"] == "root" and q["notes"] == "first"
    assert q["slot_size"] == manifest["artifacts"]["root"]["slot_size_min"]
    assert q["slot_sha256"] == manifest["artifacts"]["root"]["uncompressed_sha256"]
    assert q["kernel_cmdline"] == manifest["kernel_cmdline"]
    uki = got["0.2.0/quantix-os_0.2.0.efi"]
    assert uki["artifact"] == "uki" and uki["slot_sha256"] == q["slot_sha256"]
    assert q["rollout"]["fraction"] == 1 and q["rollout"]["paused"] is False
    assert set(q) == {"version", "artifact", "channels", "security_epoch", "slot_size", "slot_sha256",
                      "kernel_cmdline", "rollout", "notes", "yanked"}

    repo.promote("0.2.0", to="stable")
    assert verify_repo(url, repo.root_bytes(1), tmp_path)[
        "0.2.0/quantix-os_0.2.0.efi"]["channels"] == ["dev", "beta", "stable"]
    repo.rollout("0.2.0", percent=25)
    r = verify_repo(url, repo.root_bytes(1), tmp_path)["0.2.0/quantix-os_0.2.0.root.erofs.zst"]["rollout"]
    assert r["fraction"] == "0.25" and not r["paused"]
    repo.rollout("0.2.0", paused=True)
    assert verify_repo(url, repo.root_bytes(1), tmp_path)[
        "0.2.0/quantix-os_0.2.0.root.erofs.zst"]["rollout"]["paused"] is True

    publish(repo, make_release("0.3.0"), channel="beta")
    repo.yank("0.2.0")
    got = verify_repo(url, repo.root_bytes(1), tmp_path)
    assert got["0.2.0/quantix-os_0.2.0.root.erofs.zst"]["yanked"] is True
    assert got["0.2.0/quantix-os_0.2.0.root.erofs.zst"]["channels"] == []
    assert got["0.3.0/quantix-os_0.3.0.efi"]["channels"] == ["dev", "beta"]
    with pytest.raises(UserError, match="yanked"):
        repo.promote("0.2.0", to="beta")
    with pytest.raises(UserError, match="already published"):
        publish(repo, make_release("0.3.0"))
    assert [r["version"] for r in repo.releases()] == ["0.3.0", "0.2.0"]


def test_mismatched_sums_refused(make_release):
    build = make_release("0.2.0")
    sums = build / "SHA256SUMS"
    lines = sums.read_text().splitlines()
    lines = [("0" * 64 + l[64:]) if l.endswith(".efi") else l for l in lines]
    sums.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match="SHA256SUMS: the sha256 of quantix-os_0.2.0.efi"):
        release.load([build])


def test_damaged_artifact_refused(make_release):
    build = make_release("0.2.0")
    efi = build / "quantix-os_0.2.0.efi"
    data = bytearray(efi.read_bytes())
    data[10] ^= 1
    efi.write_bytes(bytes(data))
    with pytest.raises(UserError, match="does not match SHA256SUMS"):
        release.load([build])


@pytest.mark.parametrize("name", ["../x.efi", "a/b", ".hidden", "quantix-os_..efi", "evil.sh", ""])
def test_filename_validation(name):
    with pytest.raises(UserError):
        release.check_filename(name)


def test_refresh_resigns_before_expiry(repo, static_server, tmp_path, make_release):
    url = static_server(repo.repo_dir)
    publish(repo, make_release("0.2.0"))
    assert repo.refresh() == []
    # 13 hours later the timestamp (1 day) is due; 5 days later snapshot (7 days) too.
    assert repo.refresh(now=utcnow() + dt.timedelta(hours=13)) == ["timestamp"]
    assert repo.refresh(now=utcnow() + dt.timedelta(days=5)) == ["snapshot", "timestamp"]
    assert repo.refresh(now=utcnow() + dt.timedelta(days=61)) == ["targets", "snapshot", "timestamp"]
    st = repo.load()
    assert st.timestamp.signed.expires > utcnow() + dt.timedelta(days=61)
    assert verify_repo(url, repo.root_bytes(1), tmp_path)


def test_expired_timestamp_is_rejected_by_client(tmp_path, static_server):
    """The check above is meaningful: without re-signing, a client refuses the repository."""
    repo = Repository(tmp_path / "old")
    repo.init(now=utcnow() - dt.timedelta(days=2))
    url = static_server(repo.repo_dir)
    with pytest.raises(ExpiredMetadataError):
        verify_repo(url, repo.root_bytes(1), tmp_path)
    repo.refresh()
    assert verify_repo(url, repo.root_bytes(1), tmp_path) == {}


def test_rotation_followed_by_old_client(repo, static_server, tmp_path, make_release):
    url = static_server(repo.repo_dir)
    publish(repo, make_release("0.2.0"))
    root_v1 = repo.root_bytes(1)
    old_keys = set(repo.load().root.signed.keys)
    assert repo.rotate() == 2
    publish(repo, make_release("0.3.0"))
    st = repo.load()
    assert st.root.signed.version == 2 and not (set(st.root.signed.keys) & old_keys)
    assert len(verify_repo(url, root_v1, tmp_path)) == 4  # a host bootstrapped with root v1 follows
    assert repo.rotate() == 3
    assert len(verify_repo(url, root_v1, tmp_path)) == 4
    assert repo.key_status()["roles"]["root"]["version"] == 3


def test_rotation_needs_threshold_of_root_keys(repo, tmp_path):
    keys = sorted((tmp_path / "data" / "root-keys").glob("*.pem"))
    keys[0].unlink()
    keys[1].unlink()
    with pytest.raises(Exception, match="needs 2 of the current root keys, found 1"):
        repo.rotate()
