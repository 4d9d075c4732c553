"""qx-build's command line: a failed file operation is the machine's state, reported with a hint
(exit 4), never as an internal bug (exit 70) with a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qx_build import cli
from qx_build.paths import Release, read_version
from qx_common.cli import main_wrapper


def test_a_missing_build_file_is_an_error_with_a_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A manifest whose UKI was removed afterwards: `qx-build size` must read the UKI and cannot.
    rel = Release(read_version(), tmp_path)
    arts = {"root": {"file": rel.root_payload.name, "size": 1, "sha256": "0" * 64},
            "uki": {"file": rel.uki.name, "size": 1, "sha256": "0" * 64}}
    rel.manifest.write_text(json.dumps({"version": rel.version, "artifacts": arts}))
    rc = main_wrapper(cli._main, ["--build-dir", str(tmp_path), "size"])
    err = capsys.readouterr().err
    assert rc == 4, err
    assert f"error: {rel.uki}: No such file or directory" in err
    assert "hint: check free space (df -h) and the build directory" in err
    assert "internal error" not in err and "Traceback" not in err


def test_a_build_dir_that_is_a_file_is_an_error_with_a_hint(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    not_a_dir = tmp_path / "build"
    not_a_dir.write_text("")
    rc = main_wrapper(cli._main, ["--build-dir", str(not_a_dir), "dev-keys"])
    err = capsys.readouterr().err
    assert rc == 4, err
    assert f"error: {not_a_dir}: File exists" in err and "internal error" not in err
