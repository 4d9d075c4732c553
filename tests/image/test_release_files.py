"""Manifest, SHA256SUMS and the publish step (renames only, stale files never pass as new)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from qx_build import artifacts, build
from qx_build.paths import Release
from qx_common.errors import ExternalError


def _release_with_files(d: Path, version: str = "1.2.3", *, skip: tuple[str, ...] = ()) -> Release:
    rel = Release(version, d)
    d.mkdir(parents=True, exist_ok=True)
    for f in rel.files():
        if f.name.split(".")[-1] not in skip and f != rel.sha256sums:
            f.write_bytes(f.name.encode() * 100)
    return rel


def test_sha256sums_verifies_with_coreutils(tmp_path: Path) -> None:
    rel = _release_with_files(tmp_path)
    files = [f for f in rel.files() if f != rel.sha256sums]
    artifacts.write_sha256sums(rel.sha256sums, files)
    subprocess.run(["sha256sum", "--check", "--strict", "SHA256SUMS"], cwd=tmp_path, check=True, capture_output=True)
    rel.uki.write_bytes(b"tampered")
    bad = subprocess.run(["sha256sum", "--check", "SHA256SUMS"], cwd=tmp_path, capture_output=True, text=True)
    assert bad.returncode != 0 and rel.uki.name in bad.stdout


def test_manifest_fields(tmp_path: Path) -> None:
    mk = tmp_path / "mkosi.manifest"
    mk.write_text(json.dumps({"packages": [{"type": "deb", "name": "zlib1g", "version": "1:1.3"},
                                           {"type": "deb", "name": "bash", "version": "5.2"}]}))
    m = artifacts.build_manifest(version="1.2.3", security_epoch=4, source_date_epoch=1767225600,
                                 kernel_cmdline="ro", mkosi_manifest=mk, artifacts={"uki": {"file": "x"}})
    assert m["build_time"] == "2026-01-01T00:00:00Z"
    assert [p["name"] for p in m["packages"]] == ["bash", "zlib1g"]
    assert m["security_epoch"] == 4 and m["format"] == 1 and m["product"] == "Quantix OS"


def test_publish_moves_a_complete_release_and_drops_stale_files(tmp_path: Path) -> None:
    work = _release_with_files(tmp_path / "work", skip=("iso",))
    artifacts.write_sha256sums(work.sha256sums, [f for f in work.files() if f.exists() and f != work.sha256sums])
    final_dir = tmp_path / "build"
    final_dir.mkdir()
    stale_iso = final_dir / work.iso.name
    stale_iso.write_bytes(b"from an older build")
    final = build.publish(work, final_dir)
    assert final.disk.exists() and final.sha256sums.exists()
    assert not stale_iso.exists(), "an ISO not built this time must not survive beside the new SHA256SUMS"
    assert not any((tmp_path / "work").iterdir())


def test_publish_refuses_without_sha256sums(tmp_path: Path) -> None:
    work = _release_with_files(tmp_path / "work")
    (tmp_path / "build").mkdir()
    with pytest.raises(ExternalError, match="SHA256SUMS missing"):
        build.publish(work, tmp_path / "build")
