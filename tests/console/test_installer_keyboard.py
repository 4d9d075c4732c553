"""Keyboard layouts: applied to the running console with loadkeys (best effort), stored for the installed
host in vconsole.conf on the data partition."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qx_common.errors import UserError
from qx_console import keyboard
from qx_console.keyboard import DEFAULT_LAYOUT, LAYOUTS, VCONSOLE_CONF, apply_layout, read_layout, write_layout


def test_the_issue_layouts_are_offered() -> None:
    assert {"us", "de", "fr", "uk"} <= set(LAYOUTS) and DEFAULT_LAYOUT == "us"


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_write_then_read(tmp_path: Path, name: str) -> None:
    path = write_layout(tmp_path, name)
    assert path == tmp_path / "var/lib/quantix/config/vconsole.conf"
    assert path.read_text() == f"KEYMAP={name}\n"
    assert read_layout(tmp_path) == name
    assert [p.name for p in path.parent.iterdir()] == ["vconsole.conf"]  # no temp file left behind


def test_write_follows_the_etc_link_target(tmp_path: Path) -> None:
    """/etc/vconsole.conf on the image links to the data partition's file: writing through either is one file."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/vconsole.conf").symlink_to(tmp_path / VCONSOLE_CONF)
    write_layout(tmp_path, "de")
    assert (tmp_path / "etc/vconsole.conf").read_text() == "KEYMAP=de\n"
    assert (tmp_path / "etc/vconsole.conf").is_symlink()


def test_read_defaults(tmp_path: Path) -> None:
    assert read_layout(tmp_path) == DEFAULT_LAYOUT
    f = tmp_path / VCONSOLE_CONF
    f.parent.mkdir(parents=True)
    f.write_text("FONT=Lat2-Terminus16\n")
    assert read_layout(tmp_path) == DEFAULT_LAYOUT
    f.write_text('FONT=Lat2-Terminus16\nKEYMAP="fr"\n')
    assert read_layout(tmp_path) == "fr"
    f.write_text("KEYMAP=dvorak-programmer\n")
    assert read_layout(tmp_path) == DEFAULT_LAYOUT


def test_unknown_layout_is_refused_before_anything_runs_or_is_written(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="'xx' is not a known keyboard layout"):
        write_layout(tmp_path, "xx")
    with pytest.raises(UserError, match="use one of: us, uk, de, fr"):
        apply_layout("xx")
    assert not (tmp_path / VCONSOLE_CONF).exists()


def test_apply_runs_loadkeys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """loadkeys is kbd's program; a stand-in on PATH records how it was called (the console's keymap of
    the machine running the tests must not change)."""
    record = tmp_path / "called"
    (tmp_path / "bin").mkdir()
    tool = tmp_path / "bin/loadkeys"
    tool.write_text(f"#!/bin/sh\necho \"$@\" >> {record}\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}/usr/bin:/bin")
    assert apply_layout("de") is None
    assert record.read_text() == "de\n"


def test_apply_is_best_effort(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No kbd, or loadkeys failing (serial line: no console to set): a reason to show, never an exception."""
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert "loadkeys" in (apply_layout("fr") or "")
    tool = tmp_path / "bin/loadkeys"
    tool.write_text("#!/bin/sh\necho \"Couldn't get a file descriptor referring to the console\" >&2\nexit 1\n")
    tool.chmod(0o755)
    note = apply_layout("fr")
    assert note is not None and "file descriptor referring to the console" in note
    assert keyboard.check_layout("fr") is None
