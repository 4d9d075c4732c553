"""SVG snapshots of the main screens at 80x24 (serial console size), from the fixed in-memory host, as a
Linux console shows them: the app runs with TERM=linux (16 colours, as qx-console@tty1.service sets it)
and its screenshots are drawn in the console's palette (:mod:`qx_console.screenshot`).

Update after an intended change: pytest tests/console/test_snapshots.py --snapshot-update
(then read the SVGs: their colours must stay in LINUX_PALETTE; test_snapshot_files_use_only_the_palette
checks the stored files).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from textual.widgets import OptionList

from qx_console.app import ConsoleApp
from qx_console.customize import ConfirmScreen, CustomizeScreen, LoginScreen, NodeApiScreen
from qx_console.memory import MemoryBackend, MemoryState
from qx_console.network_screens import NetworkScreen
from qx_console.screenshot import LINUX_PALETTE
from qx_console.status import StatusScreen
from qx_console.ui import ErrorScreen

from .helpers import bad_glyphs, on_screen, until

SIZE = (80, 24)
SNAPSHOTS = Path(__file__).parent / "__snapshots__" / "test_snapshots"
PALETTE = {"#%02x%02x%02x" % rgb for rgb in LINUX_PALETTE}


@pytest.fixture(autouse=True)
def linux_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment of qx-console@tty1.service: TERM=linux, nothing announcing more colours."""
    monkeypatch.setenv("TERM", "linux")
    for var in ("COLORTERM", "NO_COLOR", "FORCE_COLOR", "TEXTUAL_COLOR_SYSTEM"):
        monkeypatch.delenv(var, raising=False)


def svg_colours(svg: str) -> set[str]:
    return {c.lower() for c in re.findall(r"#[0-9a-fA-F]{6}\b", svg)}


def make(state: MemoryState | None = None) -> ConsoleApp:
    return ConsoleApp(MemoryBackend(state), refresh_s=3600)


def _as_on_a_linux_console(pilot) -> None:
    app = pilot.app
    assert app.console.color_system == "standard", "the app must render in 16 colours under TERM=linux"
    assert not bad_glyphs(app)
    assert svg_colours(app.export_screenshot()) <= PALETTE


async def _status(pilot) -> None:
    await until(pilot, lambda: isinstance(pilot.app.screen, StatusScreen) and on_screen(pilot.app, "10.0.2.15"))
    _as_on_a_linux_console(pilot)


async def _customize(pilot) -> None:
    await _status(pilot)
    await pilot.press("f2")
    await until(pilot, lambda: isinstance(pilot.app.screen, LoginScreen))
    await pilot.press(*"quantix-pw", "enter")
    await until(pilot, lambda: isinstance(pilot.app.screen, CustomizeScreen))
    _as_on_a_linux_console(pilot)


async def _network(pilot) -> None:
    from qx_console.network_menu import NetworkMenuScreen

    await _customize(pilot)
    await pilot.press("enter")
    await until(pilot, lambda: isinstance(pilot.app.screen, NetworkMenuScreen) and pilot.app.screen.draft is not None)
    await pilot.press("end", "enter")  # the last item: all settings on one form
    await until(pilot, lambda: isinstance(pilot.app.screen, NetworkScreen) and on_screen(pilot.app, "eno2")
                and pilot.app.screen.query_one("#nic", OptionList).has_focus)
    _as_on_a_linux_console(pilot)


async def _node_api(pilot) -> None:
    await _customize(pilot)
    menu = pilot.app.screen.query_one("#menu", OptionList)
    menu.highlighted = menu.get_option_index("nodeapi")
    await pilot.press("enter")
    await until(pilot, lambda: isinstance(pilot.app.screen, NodeApiScreen) and on_screen(pilot.app, "Valid until"))
    _as_on_a_linux_console(pilot)


def test_snapshot_status(snap_compare) -> None:
    assert snap_compare(make(), terminal_size=SIZE, run_before=_status)


def test_snapshot_status_updates_unavailable(snap_compare) -> None:
    assert snap_compare(make(MemoryState(updates_available=False)), terminal_size=SIZE, run_before=_status)


def test_snapshot_customize_menu(snap_compare) -> None:
    assert snap_compare(make(), terminal_size=SIZE, run_before=_customize)


def test_snapshot_network_form(snap_compare) -> None:
    assert snap_compare(make(), terminal_size=SIZE, run_before=_network)


def test_snapshot_node_api(snap_compare) -> None:
    assert snap_compare(make(), terminal_size=SIZE, run_before=_node_api)


async def _network_errors(pilot) -> None:
    from .test_app import fill_network

    await _network(pilot)
    await fill_network(pilot, pilot.app, v4addr="127.0.0.1", v4prefix="", v4gw="169.254.0.1")
    pilot.app.screen.query_one("#nic", OptionList).focus()
    await pilot.press("f10")
    await until(pilot, lambda: on_screen(pilot.app, "Nothing was written") and on_screen(pilot.app, "loopback"))
    _as_on_a_linux_console(pilot)


async def _login_refused(pilot) -> None:
    await _status(pilot)
    await pilot.press("f2")
    await until(pilot, lambda: isinstance(pilot.app.screen, LoginScreen))
    await pilot.press(*"wrong", "enter")
    await until(pilot, lambda: on_screen(pilot.app, "root password: incorrect"))
    _as_on_a_linux_console(pilot)


async def _error_panel(pilot) -> None:
    from qx_common.errors import ExternalError

    await _customize(pilot)
    pilot.app.show_error("Restart failed", ExternalError(
        "systemctl restart systemd-networkd.service: Job for systemd-networkd.service failed \u2014 see "
        "\u201csystemctl status\u201d", hint="look at View System Logs > system"))
    await until(pilot, lambda: isinstance(pilot.app.screen, ErrorScreen))
    _as_on_a_linux_console(pilot)


async def _confirm_dialog(pilot) -> None:
    await _customize(pilot)
    menu = pilot.app.screen.query_one("#menu", OptionList)
    menu.highlighted = menu.get_option_index("restart")
    await pilot.press("enter")
    await until(pilot, lambda: isinstance(pilot.app.screen, ConfirmScreen))
    _as_on_a_linux_console(pilot)


def test_snapshot_network_form_errors(snap_compare) -> None:
    assert snap_compare(make(), terminal_size=SIZE, run_before=_network_errors)


def test_snapshot_login_refused(snap_compare) -> None:
    assert snap_compare(make(), terminal_size=SIZE, run_before=_login_refused)


def test_snapshot_error_panel(snap_compare) -> None:
    assert snap_compare(make(), terminal_size=SIZE, run_before=_error_panel)


def test_snapshot_confirm_dialog(snap_compare) -> None:
    assert snap_compare(make(), terminal_size=SIZE, run_before=_confirm_dialog)


async def _network_menu(pilot) -> None:
    from qx_console.network_menu import NetworkMenuScreen

    await _customize(pilot)
    await pilot.press("enter")
    await until(pilot, lambda: isinstance(pilot.app.screen, NetworkMenuScreen) and pilot.app.screen.draft is not None
                and on_screen(pilot.app, "Now: all wired NICs"))
    _as_on_a_linux_console(pilot)


async def _ipv4_dialog_error(pilot) -> None:
    from qx_console.network_menu import Ipv4Dialog

    await _network_menu(pilot)
    await pilot.press("enter")  # Network Adapters
    await until(pilot, lambda: on_screen(pilot.app, "eno2"))
    await pilot.press("enter", "f10")  # eno1 alone
    await until(pilot, lambda: on_screen(pilot.app, "Now: eno1"))
    await pilot.press("down", "down", "enter")
    await until(pilot, lambda: isinstance(pilot.app.screen, Ipv4Dialog))
    await pilot.press("enter", "tab", *"10.0.2.20", "tab", *"24", "tab", *"192.0.2.1", "f10")
    await until(pilot, lambda: on_screen(pilot.app, "outside the subnet"))
    _as_on_a_linux_console(pilot)


async def _apply_changes_dialog(pilot) -> None:
    from qx_console.network_menu import ApplyChangesDialog

    await _network_menu(pilot)
    await pilot.press("end", "up", "enter")  # Hostname
    await until(pilot, lambda: on_screen(pilot.app, "host1.example.com") or on_screen(pilot.app, "qx-demo"))
    await pilot.press("ctrl+u", *"host7", "enter", "escape")
    await until(pilot, lambda: isinstance(pilot.app.screen, ApplyChangesDialog))
    _as_on_a_linux_console(pilot)


def test_snapshot_network_menu(snap_compare) -> None:
    assert snap_compare(make(), terminal_size=SIZE, run_before=_network_menu)


def test_snapshot_ipv4_dialog_error(snap_compare) -> None:
    assert snap_compare(make(), terminal_size=SIZE, run_before=_ipv4_dialog_error)


def test_snapshot_apply_changes_dialog(snap_compare) -> None:
    assert snap_compare(make(), terminal_size=SIZE, run_before=_apply_changes_dialog)


async def _lockdown_password(pilot) -> None:
    from qx_console.customize import LockdownScreen

    await _customize(pilot)
    menu = pilot.app.screen.query_one("#menu", OptionList)
    menu.highlighted = menu.get_option_index("lockdown")
    await pilot.press("enter")
    await until(pilot, lambda: isinstance(pilot.app.screen, LockdownScreen) and on_screen(pilot.app, "Lockdown mode: off"))
    await pilot.press("enter")  # Turn lockdown on: the password once more
    await until(pilot, lambda: isinstance(pilot.app.screen, LoginScreen))
    await pilot.press(*"wrong", "enter")
    await until(pilot, lambda: on_screen(pilot.app, "root password: incorrect"))
    _as_on_a_linux_console(pilot)


def test_snapshot_lockdown_password(snap_compare) -> None:
    assert snap_compare(make(), terminal_size=SIZE, run_before=_lockdown_password)


def test_snapshot_files_use_only_the_palette() -> None:
    """The stored snapshots (what a reviewer reads) are in the Linux console's 16 colours, at 80x24."""
    files = sorted(SNAPSHOTS.glob("*.svg"))
    assert {f.stem for f in files} >= {"test_snapshot_status", "test_snapshot_customize_menu",
                                       "test_snapshot_network_form", "test_snapshot_node_api",
                                       "test_snapshot_network_form_errors", "test_snapshot_login_refused",
                                       "test_snapshot_error_panel", "test_snapshot_confirm_dialog",
                                       "test_snapshot_network_menu", "test_snapshot_ipv4_dialog_error",
                                       "test_snapshot_apply_changes_dialog", "test_snapshot_lockdown_password"}
    for f in files:
        svg = f.read_text()
        assert svg_colours(svg) <= PALETTE, f"{f.name}: {sorted(svg_colours(svg) - PALETTE)}"
        rows = set(re.findall(r'<text class="terminal-r\d+" x="[\d.]+" y="([\d.]+)"', svg))
        assert len(rows) == SIZE[1], f"{f.name}: {len(rows)} lines, not {SIZE[1]}"
