"""SVG snapshots of the main screens at 80x24 (serial console size), from the fixed in-memory host.

Update after an intended change: pytest tests/console/test_snapshots.py --snapshot-update
"""

from __future__ import annotations

from qx_console.app import ConsoleApp
from qx_console.customize import CustomizeScreen, LoginScreen
from qx_console.memory import MemoryBackend, MemoryState
from qx_console.network_screens import NetworkScreen
from qx_console.status import StatusScreen

from .helpers import bad_glyphs, on_screen, until

SIZE = (80, 24)


def make(state: MemoryState | None = None) -> ConsoleApp:
    return ConsoleApp(MemoryBackend(state), refresh_s=3600)


async def _status(pilot) -> None:
    await until(pilot, lambda: isinstance(pilot.app.screen, StatusScreen) and on_screen(pilot.app, "10.0.2.15"))
    assert not bad_glyphs(pilot.app)


async def _customize(pilot) -> None:
    await _status(pilot)
    await pilot.press("f2")
    await until(pilot, lambda: isinstance(pilot.app.screen, LoginScreen))
    await pilot.press(*"quantix-pw", "enter")
    await until(pilot, lambda: isinstance(pilot.app.screen, CustomizeScreen))
    assert not bad_glyphs(pilot.app)


async def _network(pilot) -> None:
    await _customize(pilot)
    await pilot.press("enter")
    await until(pilot, lambda: isinstance(pilot.app.screen, NetworkScreen) and on_screen(pilot.app, "eno2"))
    assert not bad_glyphs(pilot.app)


def test_snapshot_status(snap_compare) -> None:
    assert snap_compare(make(), terminal_size=SIZE, run_before=_status)


def test_snapshot_status_updates_unavailable(snap_compare) -> None:
    assert snap_compare(make(MemoryState(updates_available=False)), terminal_size=SIZE, run_before=_status)


def test_snapshot_customize_menu(snap_compare) -> None:
    assert snap_compare(make(), terminal_size=SIZE, run_before=_customize)


def test_snapshot_network_form(snap_compare) -> None:
    assert snap_compare(make(), terminal_size=SIZE, run_before=_network)
