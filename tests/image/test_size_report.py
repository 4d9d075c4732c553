"""`make size`: the report reads the manifest and the UKI and flags the payload goal."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from qx_build import size
from qx_build.paths import Release, read_version
from qx_common.errors import UserError

STUB = Path("/usr/lib/systemd/boot/efi/linuxx64.efi.stub")


def _fake_build(tmp_path: Path, root_bytes: int) -> Path:
    rel = Release(read_version(), tmp_path)
    cmd = tmp_path / "cmdline"
    cmd.write_text("ro")
    subprocess.run(["objcopy", "--add-section", f".cmdline={cmd}", "--change-section-vma", ".cmdline=0x30000",
                    str(STUB), str(rel.uki)], check=True)
    arts = {
        "root": {"file": rel.root_payload.name, "size": root_bytes, "sha256": "0" * 64,
                 "uncompressed_size": 3 * root_bytes, "uncompressed_sha256": "0" * 64, "slot_size_min": 1},
        "uki": {"file": rel.uki.name, "size": rel.uki.stat().st_size, "sha256": "0" * 64},
    }
    rel.manifest.write_text(json.dumps({"version": rel.version, "artifacts": arts}))
    return tmp_path


def test_report_within_goal(tmp_path: Path) -> None:
    out = size.report(_fake_build(tmp_path, 100 * 1000**2))
    assert "within the 150 MB goal" in out and ".cmdline" in out
    assert "uncompressed 286.1 MiB" in out


def test_report_over_goal(tmp_path: Path) -> None:
    assert "OVER the 150 MB goal" in size.report(_fake_build(tmp_path, 200 * 1000**2))


def test_dir_sizes_groups_by_depth(tmp_path: Path) -> None:
    (tmp_path / "usr/lib/a").mkdir(parents=True)
    (tmp_path / "usr/lib/a/f").write_bytes(b"x" * 1000)
    (tmp_path / "usr/lib/b").mkdir(parents=True)
    (tmp_path / "usr/lib/b/g").write_bytes(b"x" * 500)
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/h").write_bytes(b"x" * 10)
    sizes = size.dir_sizes(tmp_path, depth=2)
    assert sizes["/usr/lib"] == 1500 and sizes["/etc"] == 10


def test_report_without_a_build_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no build of .* missing") as e:
        size.report(tmp_path)
    assert e.value.hint == "run 'make image' first"
