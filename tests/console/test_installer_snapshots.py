"""SVG snapshots of the installer's disk picker and confirm screen at 80x24, as the Linux console shows
them (TERM=linux, its 16-colour palette: see tests/console/test_snapshots.py).

The disks are real loop devices at fixed numbers (the picker shows device names: a snapshot needs the
same ones every run) with fixed sizes; the payload is the small test payload, version 0.9.1.
Update after an intended change: pytest tests/console/test_installer_snapshots.py --snapshot-update
(then read the SVGs).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.widgets import Button, Input, OptionList

from qx_console.installer import InstallerApp
from qx_console.installer_screens import ConfirmScreen, DiskScreen, InstallNetworkScreen, PasswordScreen, WelcomeScreen
from qx_console.memory import MemoryBackend
from qx_console.screenshot import LINUX_PALETTE
from tests.install.conftest import install_payload  # noqa: F401 - fixture

from .helpers import bad_glyphs, on_screen, push, until

SIZE = (80, 24)
PALETTE = {"#%02x%02x%02x" % rgb for rgb in LINUX_PALETTE}
# Fixed loop device numbers, far above what losetup -f hands out on a build machine.
LOOPS = ((231, "big", 300), (232, "small", 100), (233, "medium", 300))


@pytest.fixture(autouse=True)
def linux_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "linux")
    for var in ("COLORTERM", "NO_COLOR", "FORCE_COLOR", "TEXTUAL_COLOR_SYSTEM"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def fixed_loops(tmp_path: Path) -> Iterator[dict[str, str]]:
    if os.geteuid() != 0:
        pytest.fail("needs root (loop devices)")
    attached: dict[str, str] = {}
    made: list[str] = []
    try:
        for n, name, mib in LOOPS:
            dev = f"/dev/loop{n}"
            if not os.path.exists(dev):
                subprocess.run(["mknod", dev, "b", "7", str(n)], check=True)
                made.append(dev)
            img = tmp_path / f"{name}.img"
            with img.open("wb") as f:
                f.truncate(mib * 1024 * 1024)
            subprocess.run(["losetup", "-P", dev, str(img)], check=True, capture_output=True)
            attached[name] = dev
        yield attached
    finally:
        for dev in attached.values():
            subprocess.run(["losetup", "-d", dev], check=False)
        for dev in made:
            os.unlink(dev)


def make(payload_dir: Path, loops: dict[str, str], tmp_path: Path) -> InstallerApp:
    return InstallerApp(MemoryBackend(), media_dirs=[payload_dir], only_disks=list(loops.values()),
                        boot_medium=[loops["medium"]], log_path=tmp_path / "install.log",
                        status_file=tmp_path / "install-status.json")


def _as_on_a_linux_console(pilot) -> None:
    import re
    app = pilot.app
    assert app.console.color_system == "standard"
    assert not bad_glyphs(app)
    assert {c.lower() for c in re.findall(r"#[0-9a-fA-F]{6}\b", app.export_screenshot())} <= PALETTE


async def _disks(pilot) -> None:
    app = pilot.app
    await until(pilot, lambda: isinstance(app.screen, WelcomeScreen) and app.payload is not None
                and on_screen(app, "Quantix OS 0.9.1"))
    await pilot.press("f10")
    await until(pilot, lambda: isinstance(app.screen, DiskScreen) and app.screen.listed, timeout=20)
    _as_on_a_linux_console(pilot)


async def _confirm(pilot) -> None:
    app = pilot.app
    await _disks(pilot)
    await pilot.press("enter")
    await until(pilot, lambda: isinstance(app.screen, PasswordScreen))
    for wid in ("new", "again"):
        app.screen.query_one(f"#{wid}", Input).value = "install-pw-1"
    await pilot.press("f10")
    await until(pilot, lambda: isinstance(app.screen, InstallNetworkScreen) and bool(app.screen.query("#apply"))
                and "Continue" in str(app.screen.query_one("#apply", Button).label))
    scr = app.screen
    nic = scr.query_one("#nic", OptionList)
    nic.focus()
    await pilot.pause()
    while str(nic.get_option_at_index(nic.highlighted).id) != "eno1":
        await pilot.press("down")
    await push(pilot, "#v4mode")
    await until(pilot, lambda: str(scr.query_one("#v4mode", Button).label) == "static")
    for wid, value in (("v4addr", "192.0.2.10"), ("v4prefix", "24"), ("v4gw", "192.0.2.1"),
                       ("dns", "192.0.2.53"), ("hostname", "qx-inst-1")):
        scr.query_one(f"#{wid}", Input).value = value
    await pilot.press("f10")
    await until(pilot, lambda: isinstance(app.screen, ConfirmScreen) and app.screen.plan is not None, timeout=20)
    await pilot.pause()
    _as_on_a_linux_console(pilot)


def test_snapshot_installer_disk_picker(snap_compare, install_payload, fixed_loops, tmp_path: Path) -> None:
    assert snap_compare(make(install_payload.dir, fixed_loops, tmp_path), terminal_size=SIZE, run_before=_disks)


def test_snapshot_installer_confirm(snap_compare, install_payload, fixed_loops, tmp_path: Path) -> None:
    assert snap_compare(make(install_payload.dir, fixed_loops, tmp_path), terminal_size=SIZE, run_before=_confirm)
