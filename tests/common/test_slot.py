"""The one slot parser, and parity: every package that tells the running slot gives the same answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from qx_common.slot import root_arg, slot_from_cmdline

CASES = [
    ("root=PARTLABEL=root-a ro quiet", "a"),
    ("BOOT_IMAGE=x root=PARTLABEL=root-b", "b"),
    ("root=PARTLABEL=root-a root=PARTLABEL=root-b", "b"),      # the kernel takes the last root=
    ("root=PARTLABEL=root-b root=/dev/vda2", None),            # ... even when it is not a slot
    ("root=PARTLABEL=root-a.old", None),
    ("root=PARTLABEL=root-c", None),
    ("xroot=PARTLABEL=root-a", None),
    ("quantix.live=1 console=ttyS0", None),
    ("", None),
]


@pytest.mark.parametrize("cmdline, slot", CASES)
def test_slot_from_cmdline(cmdline: str, slot: str | None) -> None:
    assert slot_from_cmdline(cmdline) == slot


def test_root_arg_round_trips_and_refuses_other_slots() -> None:
    assert [slot_from_cmdline(root_arg(s)) for s in ("a", "b")] == ["a", "b"]
    with pytest.raises(ValueError):
        root_arg("c")


@pytest.mark.parametrize("cmdline, slot", CASES)
def test_qx_update_agrees(tmp_path: Path, cmdline: str, slot: str | None) -> None:
    from qx_common.errors import EnvironmentError_
    from qx_update.slots import running_slot

    f = tmp_path / "cmdline"
    f.write_text(cmdline)
    if slot is None:
        with pytest.raises(EnvironmentError_):
            running_slot("auto", f)
    else:
        assert running_slot("auto", f) == slot


def test_a_version_with_a_trailing_newline_is_not_a_version() -> None:
    from qx_common.version import is_valid_version, version_key

    assert is_valid_version("1.2.0") and is_valid_version("1.2.0-rc.1")
    for bad in ("1.2.0\n", " 1.2.0", "1.2", "01.2.0", "1.2.0-", ""):
        assert not is_valid_version(bad), repr(bad)
    with pytest.raises(ValueError):
        version_key("1.2.0\n")


@pytest.mark.parametrize("cmdline, slot", CASES)
def test_qx_node_agrees(tmp_path: Path, cmdline: str, slot: str | None) -> None:
    from qx_node.telemetry import running_slot

    f = tmp_path / "cmdline"
    f.write_text(cmdline)
    assert running_slot(f) == slot


@pytest.mark.parametrize("cmdline, slot", CASES)
def test_the_console_agrees(tmp_path: Path, cmdline: str, slot: str | None) -> None:
    from qx_console.host.context import HostContext
    from qx_console.host.machine import Machine

    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cmdline").write_text(cmdline)
    assert Machine(HostContext(root=tmp_path)).slot() == (slot.upper() if slot else "?")
