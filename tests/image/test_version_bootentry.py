"""Version stamping rules and boot entry names (systemd boot assessment counters)."""

from __future__ import annotations

from pathlib import Path

import pytest

from qx_build.paths import read_version
from qx_common import version
from qx_update import bootentry


def test_version_ordering() -> None:
    keys = ["0.9.0", "1.0.0-rc1", "1.0.0", "1.0.1", "1.10.0"]
    assert sorted(keys, key=version.version_key) == keys
    with pytest.raises(ValueError, match="not a version"):
        version.version_key("1.0")


def test_os_release_parsing_and_product_version(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/os-release").write_text('NAME="Quantix OS"\nIMAGE_ID="quantix-os"\nIMAGE_VERSION="2.0.1"\n')
    assert version.product_version(tmp_path) == "2.0.1"
    (tmp_path / "etc/os-release").write_text('NAME="Debian"\nIMAGE_VERSION="9"\n')
    assert version.product_version(tmp_path) != "9", "a foreign OS's IMAGE_VERSION is not ours"


def test_repo_version_is_valid() -> None:
    assert version.is_valid_version(read_version())


@pytest.mark.parametrize(("name", "slot", "left", "done"), [
    ("quantix-a.conf", "a", None, None), ("quantix-b+3.conf", "b", 3, None), ("quantix-b+0-3.conf", "b", 0, 3)])
def test_entry_names_round_trip(name: str, slot: str, left: int | None, done: int | None) -> None:
    e = bootentry.parse_entry_name(name)
    assert e is not None and (e.slot, e.tries_left, e.tries_done) == (slot, left, done)
    assert e.filename == name
    assert e.bad == (left == 0) and e.blessed == (left is None)


def test_foreign_entries_are_ignored() -> None:
    assert bootentry.parse_entry_name("debian-6.1.conf") is None
    assert bootentry.parse_entry_name("quantix-c.conf") is None


def test_slot_cmdline_replaces_root_only() -> None:
    base = "root=PARTLABEL=root-a rootfstype=erofs ro console=ttyS0,115200"
    assert bootentry.slot_cmdline(base, "b") == "root=PARTLABEL=root-b rootfstype=erofs ro console=ttyS0,115200"
    with pytest.raises(ValueError):
        bootentry.slot_cmdline(base, "c")
