"""Signed metadata stays within what every host accepts, and nothing signed is unservable.

Releases here are written directly (tiny payloads, every signed text field at its maximum) so that a
thousand publishes run in seconds; the root payload is a real zstd frame of the image its manifest
describes (the server decompresses it to cut its chunks, docs/update-format.md §5). After each
scenario python-tuf's ngclient — with the default ``UpdaterConfig`` limits that qx-update uses —
refreshes the repository over HTTP and downloads what it lists.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import zstandard
from tuf.ngclient import UpdaterConfig

from qx_common.errors import UserError
from qx_common.version import version_key
from qx_update import releases
from qx_update import repo as qx_repo
from qx_update_server import contract, release
from qx_update_server.repository import Repository

from .conftest import verify_repo

NOTES_WORST = '"' * contract.MAX_NOTES_BYTES  # every byte escaped in canonical JSON: the largest notes
CMDLINE_WORST = "\\" * contract.MAX_CMDLINE_BYTES


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def fast_release(base: Path, version: str, *, cmdline: str = CMDLINE_WORST, epoch: int = 0,
                 edit: Any = None) -> Path:
    """A release directory with small artifacts and a manifest whose signed fields are at their maximum.

    ``edit(manifest, directory)`` may change the manifest (and files) before SHA256SUMS is written.
    """
    d = base / f"b-{version}"
    n = 0
    while d.exists():
        n += 1
        d = base / f"b-{version}-{n}"
    d.mkdir(parents=True)
    name = f"quantix-os_{version}"
    root = d / f"{name}.root.erofs.zst"
    plain = b"payload " + version.encode() * 8
    root.write_bytes(zstandard.ZstdCompressor().compress(plain))
    efi = d / f"{name}.efi"
    efi.write_bytes(b"MZ" + version.encode())
    manifest: dict[str, Any] = {
        "format": 1, "image_id": "quantix-os", "version": version, "security_epoch": epoch,
        "kernel_cmdline": cmdline,
        "artifacts": {
            "root": {"file": root.name, "size": root.stat().st_size, "sha256": _sha(root),
                     "uncompressed_sha256": hashlib.sha256(plain).hexdigest(), "slot_size_min": len(plain)},
            "uki": {"file": efi.name, "size": efi.stat().st_size, "sha256": _sha(efi)}}}
    if edit:
        edit(manifest, d)
    mp = d / f"{name}.manifest.json"
    mp.write_text(json.dumps(manifest))
    (d / "SHA256SUMS").write_text("".join(f"{_sha(p)}  {p.name}\n" for p in sorted(d.iterdir())))
    return d


def client_targets_length(data_dir: Path) -> int:
    """The size of the current top-level targets metadata (what every host downloads when it changes)."""
    md = data_dir / "repository" / "metadata"
    ts = json.loads((md / "timestamp.json").read_text())["signed"]["meta"]["snapshot.json"]["version"]
    tv = json.loads((md / f"{ts}.snapshot.json").read_text())["signed"]["meta"]["targets.json"]["version"]
    return (md / f"{tv}.targets.json").stat().st_size


# ---- what one host check costs, by design (docs/update-format.md §2.1) ------------------------------
# Worst-case sizes of the signed files, every field at its maximum (notes and kernel_cmdline fully
# escaped: 2 x 4096 and 2 x 2048 bytes per target), one ed25519 signature each:
# a release's role: 2 artifact targets x (~12.5 KB of escaped fields + ~700 B of hashes, paths, keys), and
# their 2 chunk-index targets (~1 KB each: the same fields without notes and command line)
ROLE_MAX = 30_000
TIMESTAMP_MAX = 1_000
SNAPSHOT_MAX = 600 + 130 * contract.MAX_SIGNED_RELEASES  # one meta entry (name, version, length) per release
# The top-level role: one delegation (~330 B: name, key id, path pattern) per release, plus the newest
# release of each channel for clients that read no delegation.
TOP_MAX = 1_500 + 330 * contract.MAX_SIGNED_RELEASES + len(contract.CHANNELS) * ROLE_MAX
PROBE_404 = 1_000  # the next root version ngclient asks for, answered 404


class CountingHandler(http.server.SimpleHTTPRequestHandler):
    """A plain static web server that adds up the body bytes it sends (Content-Length of each response)."""

    sent: list[tuple[str, int]]

    def send_header(self, keyword: str, value: str) -> None:
        if keyword.lower() == "content-length":
            self.sent.append((self.path, int(value)))
        super().send_header(keyword, value)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def counting_server() -> Iterator[Callable[[Path], tuple[str, list[tuple[str, int]]]]]:
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(directory: Path) -> tuple[str, list[tuple[str, int]]]:
        sent: list[tuple[str, int]] = []
        handler = type("Handler", (CountingHandler,), {"sent": sent})
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(directory)))
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}", sent

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def host_check(url: str, root: bytes, state: Path, running: str, channel: str) -> releases.Choice:
    """One check as qx-update makes it: refresh, list what is newer than ``running`` through the
    delegations, choose (qx_update's own repo and releases modules)."""
    (state / "root.json").write_bytes(root)
    rp = qx_repo.open_repo(trusted_root=state / "root.json", metadata_dir=state / "metadata", base_url=url)
    rp.refresh()
    return releases.choose(rp.targets(newer_than=running), channel=channel, running_version=running, floor=0,
                           slot_capacity=1 << 40, host_id="host-1")


def test_thousand_releases_stay_within_the_client_limit(tmp_path, static_server, counting_server):
    """1,000 publishes with the largest fields, a realistic mix of channels, rollouts and yanks."""
    repo = Repository(tmp_path / "data")
    repo.init()
    builds = tmp_path / "builds"
    for i in range(1000):
        v = f"1.{i // 100}.{i % 100}"
        repo.publish(release.load([fast_release(builds, v)]), channel="dev", notes=NOTES_WORST, move=True)
        if i % 10 == 0:
            repo.promote(v, to="beta")
        if i % 50 == 0:
            repo.promote(v, to="stable")
            repo.rollout(v, percent=10)  # a slow stable rollout: older stable releases stay needed
        if i % 7 == 3:
            repo.yank(v)
    size = client_targets_length(tmp_path / "data")
    assert size <= TOP_MAX <= contract.TARGETS_MAX_BYTES < UpdaterConfig().targets_max_length
    signed = {r["version"]: r for r in repo.releases()}
    assert len(signed) <= contract.MAX_SIGNED_RELEASES
    # what hosts of each channel could choose is still there: the newest dev release, the newest beta
    # one (1.9.90 was yanked), and every stable release (all on a 10% rollout, so none supersedes another)
    assert {"1.9.99", "1.9.80", "1.9.50", "1.9.0", "1.0.0"} <= set(signed) and "1.9.90" not in signed
    assert all(r["rollout"]["fraction"] == "0.1" for r in signed.values() if "stable" in r["channels"])
    assert sum("stable" in r["channels"] for r in signed.values()) == 20 - 3  # 1.1.50, 1.5.0, 1.8.50 were yanked
    got = verify_repo(static_server(repo.repo_dir), repo.root_bytes(1), tmp_path)
    assert len(got) == 2 * len(signed)
    # everything else left the signed set, was recorded as retired, and old metadata versions were deleted
    retired = repo.retired()
    assert len(retired) == 1000 - len(signed) and {r["reason"] for r in retired.values()} == {"yanked", "superseded"}
    assert len(list(repo.metadata_dir.glob("*.targets.json"))) <= 10
    with pytest.raises(UserError, match="retired"):
        repo.publish(release.load([fast_release(tmp_path / "again", "1.0.1")]), channel="dev")

    # What a stable host running the newest stable release downloads for a check, measured at a real web
    # server: bounded by the design (never the whole signed set), then only what changed.
    url, sent = counting_server(repo.repo_dir)
    state = tmp_path / "host"
    state.mkdir()
    newer = [v for v in signed if version_key(v) > version_key("1.9.50")]
    choice = host_check(url, repo.root_bytes(1), state, "1.9.50", "stable")
    assert choice.release is None and set(newer) <= {s["version"] for s in choice.skipped}
    first = sum(n for _, n in sent)
    # the roles fetched: releases newer than 1.9.50 only (the newest of each channel is in the top-level)
    fetched = {p.split(".release-", 1)[1].removesuffix(".json") for p, _ in sent if ".release-" in p}
    assert fetched <= set(newer) and len(fetched) >= len(newer) - len(contract.CHANNELS), (fetched, newer)
    assert first <= PROBE_404 + TIMESTAMP_MAX + SNAPSHOT_MAX + TOP_MAX + len(newer) * ROLE_MAX, (first, sent)
    flat = sum((repo.metadata_dir / f"{md.signed.version}.{name}.json").stat().st_size
               for name, md in repo.load().roles.items())
    assert first < flat  # less than the signed roles together: older releases were never fetched
    # nothing changed: the timestamp only
    sent.clear()
    host_check(url, repo.root_bytes(1), state, "1.9.50", "stable")
    unchanged = sum(n for _, n in sent)
    assert unchanged <= PROBE_404 + TIMESTAMP_MAX and [p for p, _ in sent][-1] == "/metadata/timestamp.json"
    # one older release changes (a rollout): this host downloads no release role at all
    sent.clear()
    repo.rollout("1.0.0", percent=20)
    host_check(url, repo.root_bytes(1), state, "1.9.50", "stable")
    assert not [p for p, _ in sent if "release-" in p or "targets.json" in p], sent
    assert sum(n for _, n in sent) <= PROBE_404 + TIMESTAMP_MAX + SNAPSHOT_MAX
    # a newer release changes: its role, and nothing else (it is not one the top-level lists itself)
    top = json.loads((repo.metadata_dir / f"{repo.load().top.signed.version}.targets.json").read_text())
    in_top = {t["custom"]["quantix"]["version"] for t in top["signed"]["targets"].values()}
    mid = next(v for v in sorted(newer, key=version_key) if v not in in_top)
    sent.clear()
    repo.rollout(mid, percent=50)
    host_check(url, repo.root_bytes(1), state, "1.9.50", "stable")
    assert [p for p, _ in sent if "release-" in p or "targets.json" in p] == [
        f"/metadata/{repo.load().roles[f'release-{mid}'].signed.version}.release-{mid}.json"], sent
    assert sum(n for _, n in sent) <= PROBE_404 + TIMESTAMP_MAX + SNAPSHOT_MAX + ROLE_MAX
    print(f"\nhost check bytes with 1,000 releases published ({len(signed)} signed): first {first}, "
          f"unchanged {unchanged}, one newer release changed "
          f"{sum(n for _, n in sent)}; every signed role together {flat}, top-level {size}")


def test_cap_on_signed_releases_and_recovery(tmp_path, static_server):
    """Nothing superseded (every release on a partial rollout): the cap stops growth, yank/remove recover."""
    repo = Repository(tmp_path / "data")
    repo.init()
    builds = tmp_path / "builds"
    url = static_server(repo.repo_dir)

    def pub(v: str) -> None:
        repo.publish(release.load([fast_release(builds, v)]), channel="stable", notes=NOTES_WORST, move=True)
        repo.rollout(v, percent=50)

    for i in range(contract.MAX_SIGNED_RELEASES):
        pub(f"2.0.{i}")
    # the worst case the cap allows is well inside what a host accepts
    assert client_targets_length(tmp_path / "data") <= contract.TARGETS_MAX_BYTES
    assert len(verify_repo(url, repo.root_bytes(1), tmp_path)) == 2 * contract.MAX_SIGNED_RELEASES
    with pytest.raises(UserError, match=f"the limit is {contract.MAX_SIGNED_RELEASES}") as e:
        pub("2.1.0")
    assert "qx-release remove" in (e.value.hint or "")
    assert not (repo.targets_dir / "2.1.0").exists()  # nothing of the refused release is served
    repo.yank("2.0.0")
    pub("2.1.0")  # the publish applies the retention rule first: the yanked release makes room
    repo.remove("2.0.1")
    pub("2.1.1")
    got = verify_repo(url, repo.root_bytes(1), tmp_path)
    assert "2.1.1/quantix-os_2.1.1.efi" in got and not any(p.startswith(("2.0.0/", "2.0.1/")) for p in got)
    assert repo.retired()["2.0.1"]["reason"] == "removed" and repo.retired()["2.0.0"]["reason"] == "yanked"
    with pytest.raises(UserError, match="already removed"):
        repo.remove("2.0.1")
    with pytest.raises(UserError, match="not published"):
        repo.remove("9.9.9")


def test_removed_files_go_after_the_grace(tmp_path):
    import datetime as dt

    from qx_update_server.repository import RETIRED_FILES_GRACE, utcnow

    repo = Repository(tmp_path / "data")
    repo.init()
    repo.publish(release.load([fast_release(tmp_path / "b", "3.0.0")]), channel="dev")
    repo.remove("3.0.0")
    assert (repo.targets_dir / "3.0.0").is_dir()  # a host may be downloading it right now
    repo.repair(now=utcnow() + RETIRED_FILES_GRACE + dt.timedelta(seconds=1))
    assert not (repo.targets_dir / "3.0.0").exists()


def test_superseded_rule():
    from qx_update.contract import ReleaseTarget
    from qx_update_server.repository import supersedes, utcnow

    now = utcnow()

    def q(v: str, channels: list[str], fraction: Any = 1, paused: bool = False, epoch: int = 0,
          slot: int = 100, yanked: bool = False, start: str = "2020-01-01T00:00:00Z") -> ReleaseTarget:
        return ReleaseTarget.from_custom({
            "version": v, "artifact": "root", "channels": channels, "security_epoch": epoch, "slot_size": slot,
            "slot_sha256": "0" * 64, "kernel_cmdline": "ro", "yanked": yanked,
            "rollout": {"fraction": fraction, "paused": paused, "start": start}})

    old = q("1.0.0", ["dev", "beta"], epoch=1)
    assert supersedes(q("1.1.0", ["dev", "beta", "stable"], epoch=1), old, now)
    assert not supersedes(q("1.1.0", ["dev"], epoch=1), old, now)  # beta hosts still need 1.0.0
    assert not supersedes(q("1.1.0", ["dev", "beta"], fraction="0.5", epoch=1), old, now)
    assert not supersedes(q("1.1.0", ["dev", "beta"], paused=True, epoch=1), old, now)
    assert not supersedes(q("1.1.0", ["dev", "beta"], epoch=0), old, now)  # floor-1 hosts could not take it
    assert not supersedes(q("1.1.0", ["dev", "beta"], epoch=1, slot=200), old, now)  # may not fit
    assert not supersedes(q("1.1.0", ["dev", "beta"], epoch=1, yanked=True), old, now)
    assert not supersedes(q("1.1.0", ["dev", "beta"], epoch=1, start="2999-01-01T00:00:00Z"), old, now)
    assert not supersedes(q("0.9.0", ["dev", "beta"], epoch=1), old, now)


# ---- fields and names: refused before anything is signed ----------------------------------------

def _set(path: list[str], value: Any) -> Any:
    def edit(m: dict[str, Any], _d: Path) -> None:
        node = m
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
    return edit


def _dup_file(m: dict[str, Any], _d: Path) -> None:
    m["artifacts"]["uki"] = dict(m["artifacts"]["root"])


def _rename_uki(m: dict[str, Any], d: Path) -> None:
    v = m["version"]
    (d / f"quantix-os_{v}.efi").rename(d / "quantix-os_9.9.9.efi")
    m["artifacts"]["uki"]["file"] = "quantix-os_9.9.9.efi"


def _newline_name(m: dict[str, Any], _d: Path) -> None:
    m["artifacts"]["uki"]["file"] += "\n"


@pytest.mark.parametrize("edit,message", [
    (_set(["kernel_cmdline"], "x" * (contract.MAX_CMDLINE_BYTES + 1)), "kernel_cmdline.*over the kernel's limit"),
    (_set(["kernel_cmdline"], "root=x\nquiet"), "kernel_cmdline.*printable ASCII"),
    (_set(["security_epoch"], 10**12), "security_epoch.*integer from 0"),
    (_set(["artifacts", "root", "slot_size_min"], 1 << 50), "slot_size_min.*integer from 1"),
    (_dup_file, "are the same file"),
    (_rename_uki, "artifacts.uki.file is 'quantix-os_9.9.9.efi'.*must be named 'quantix-os_4.0.0.efi'"),
    (_newline_name, "is not a release file"),
])
def test_bad_manifest_fields_refused(tmp_path, edit, message):
    repo = Repository(tmp_path / "data")
    repo.init()
    build = fast_release(tmp_path / "b", "4.0.0", edit=edit)
    with pytest.raises(UserError, match=message):
        repo.publish(release.load([build]), channel="dev")
    assert repo.releases() == [] and list(repo.targets_dir.iterdir()) == []


def test_bad_versions_refused():
    for bad in ("1.0.0\n", "1.0", "01.0.0", "1.0.0-" + "a" * 64, " 1.0.0"):
        with pytest.raises(UserError, match="MAJOR.MINOR.PATCH"):
            contract.check_version(bad)


def test_notes_bounded(tmp_path):
    repo = Repository(tmp_path / "data")
    repo.init()
    rel = release.load([fast_release(tmp_path / "b", "5.0.0")])
    with pytest.raises(UserError, match="notes: 4097 bytes is over the limit of 4096"):
        repo.publish(rel, channel="dev", notes="x" * 4097)
    with pytest.raises(UserError, match="notes: contains a control character"):
        repo.publish(rel, channel="dev", notes="a\x1b[31mred")
    assert repo.releases() == []


def test_failed_publish_leaves_nothing_downloadable(tmp_path, static_server):
    """The online targets key is gone: signing fails after the files were moved in; they go again."""
    import requests

    repo = Repository(tmp_path / "data")
    repo.init()
    url = static_server(repo.repo_dir)
    build = fast_release(tmp_path / "b", "6.0.0")
    rel = release.load([build])
    targets_keyid = repo.load().root.signed.roles["targets"].keyids[0]
    key = repo.online_keys.path / f"{targets_keyid}.pem"
    saved = key.read_bytes()
    key.unlink()
    with pytest.raises(Exception, match="no online key for the targets role"):
        repo.publish(rel, channel="dev")
    assert list(repo.targets_dir.iterdir()) == []
    r = requests.get(f"{url}/targets/6.0.0/{rel.uki.sha256}.{rel.uki.name}", timeout=5)
    assert r.status_code == 404
    key.write_bytes(saved)
    repo.publish(rel, channel="dev")
    assert len(verify_repo(url, repo.root_bytes(1), tmp_path)) == 2


def test_crash_leftovers_are_deleted_at_repair(tmp_path):
    repo = Repository(tmp_path / "data")
    repo.init()
    stray = repo.targets_dir / "7.0.0"
    stray.mkdir()
    (stray / ("0" * 64 + ".quantix-os_7.0.0.efi")).write_bytes(b"unsigned")
    repo.repair()
    assert not stray.exists()


def test_repository_signed_before_delegations_is_converted_at_start(tmp_path, static_server):
    """A repository whose top-level targets role signs every release itself (as before delegations): the
    next start (repair) moves each release into its own role in one signed change, which ngclient
    verifies with the same targets as before."""
    from tuf.api.metadata import Metadata, MetaFile, Targets

    from qx_update_server.repository import LIFETIME, utcnow

    repo = Repository(tmp_path / "data")
    repo.init()
    for v in ("8.0.0", "8.1.0"):
        repo.publish(release.load([fast_release(tmp_path / "b", v)]), channel="dev")
    url = static_server(repo.repo_dir)
    # Re-sign the state as the old layout: all targets in the top-level role, no delegation.
    state = repo.load()
    now = utcnow()
    legacy = Targets(version=state.top.signed.version + 1, expires=now + LIFETIME["targets"],
                     targets=dict(state.targets.signed.targets))
    md = Metadata(legacy)
    for s in repo.online_keys.signers(state.root.signed.roles["targets"].keyids):
        md.sign(s, append=True)
    (repo.metadata_dir / f"{legacy.version}.targets.json").write_bytes(md.to_bytes())
    snap = state.snapshot.signed
    snap.meta = {"targets.json": MetaFile(legacy.version)}
    state = repo.load()
    state.snapshot.signed.meta = snap.meta  # the commit below signs this snapshot (and a timestamp)
    repo._commit(state, targets=None, now=now)  # noqa: SLF001 - writing the pre-delegation layout
    old = repo.load()
    assert old.roles == {} and len(old.top.signed.targets) == 8  # per release: 2 artifacts, 2 chunk indexes
    host = verify_repo(url, repo.root_bytes(1), tmp_path)  # a client sees the old layout
    assert len(host) == 4

    assert repo.repair() is True
    new = repo.load()
    assert sorted(new.roles) == ["release-8.0.0", "release-8.1.0"]
    # only the newest dev release stays listed by the top-level role itself, for older clients
    assert sorted(new.top.signed.targets) == ["8.1.0/quantix-os_8.1.0.efi", "8.1.0/quantix-os_8.1.0.root.erofs.zst"]
    assert verify_repo(url, repo.root_bytes(1), tmp_path) == host
    assert repo.repair() is False  # converted once
