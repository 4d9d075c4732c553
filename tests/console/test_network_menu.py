"""Configure Management Network as a menu of small dialogs (issue 11): adapters (several, or a team),
VLAN, IPv4, IPv6, DNS + search domains, hostname; applied together through safe apply; Esc asks
Apply / Discard / Cancel when something changed; dialog keys (Up/Down fields, Left/Right buttons);
the description pane of the highlighted item, on the main menu and the network menu."""

from __future__ import annotations

import pytest
from textual.widgets import Button, Input, OptionList, Static

from qx_console.app import ConsoleApp
from qx_console.customize import CustomizeScreen
from qx_console.memory import MemoryBackend
from qx_console.network_menu import (
    AdaptersDialog, ApplyChangesDialog, DnsDialog, HostnameDialog, Ipv4Dialog, NetworkMenuScreen, VlanDialog,
)
from qx_console.network_screens import SafeApplyScreen

from .helpers import bad_glyphs, frame_text, on_screen, until
from .test_app import login, open_item

pytestmark = pytest.mark.anyio
SIZE = (80, 24)


def make() -> tuple[ConsoleApp, MemoryBackend]:
    be = MemoryBackend()
    return ConsoleApp(be, refresh_s=3600, confirm_seconds=30), be


async def menu(pilot, app: ConsoleApp) -> NetworkMenuScreen:
    await login(pilot, app)
    await open_item(pilot, app, "network")
    await until(pilot, lambda: isinstance(app.screen, NetworkMenuScreen) and app.screen.draft is not None)
    return app.screen  # type: ignore[return-value]


async def open_dialog(pilot, app: ConsoleApp, key: str, cls: type) -> None:
    m = app.screen.query_one("#netmenu", OptionList)
    m.highlighted = m.get_option_index(key)
    await pilot.press("enter")
    await until(pilot, lambda: isinstance(app.screen, cls))
    await pilot.pause()


async def type_into(pilot, app: ConsoleApp, wid: str, text: str) -> None:
    app.screen.query_one(f"#{wid}", Input).focus()
    await pilot.press("ctrl+u", *text)


async def test_team_static_address_dns_applied_together_through_safe_apply() -> None:
    app, be = make()
    async with app.run_test(size=SIZE) as pilot:
        await menu(pilot, app)
        # Adapters: eno1 and eno2 checked (Enter/Space toggles), team cycled to active-backup
        await open_dialog(pilot, app, "adapters", AdaptersDialog)
        await pilot.press("enter")  # eno1
        await pilot.press("down", "space")  # eno2
        await until(pilot, lambda: on_screen(app, "[2] eno2"))
        app.screen.query_one("#team", Button).focus()
        await pilot.press("enter")
        await until(pilot, lambda: on_screen(app, "2 adapters as one team (active-backup)"))
        await pilot.press("f10")
        await until(pilot, lambda: isinstance(app.screen, NetworkMenuScreen))
        assert on_screen(app, "Network Adapters (changed)")
        # IPv4: static; Enter on the mode cycles it, Enter in the last field is OK
        await open_dialog(pilot, app, "ipv4", Ipv4Dialog)
        app.screen.query_one("#mode", Button).focus()
        await pilot.press("enter")
        await type_into(pilot, app, "addr", "10.0.2.20")
        await type_into(pilot, app, "prefix", "24")
        await type_into(pilot, app, "gw", "10.0.2.2")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, NetworkMenuScreen))
        await open_dialog(pilot, app, "dns", DnsDialog)
        await type_into(pilot, app, "dns", "10.0.2.3")
        await type_into(pilot, app, "search", "lab.example, example.com")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, NetworkMenuScreen))
        assert "write_network" not in be.calls  # nothing written before Apply
        # Esc: apply changes? -> Apply (Right then Left lands back on Apply)
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, ApplyChangesDialog))
        # leaving the factory default changes what VLAN and IPv6 mean too (no longer "from DHCP")
        assert app.screen.changed == ["Network Adapters", "VLAN (optional)", "IPv4 Configuration",
                                      "IPv6 Configuration", "DNS Configuration"]
        assert on_screen(app, "Changed: Network Adapters, VLAN (optional), IPv4")
        await pilot.press("right")
        assert app.focused is app.screen.query_one("#discard")
        await pilot.press("left", "enter")
        await until(pilot, lambda: isinstance(app.screen, SafeApplyScreen) and on_screen(app, "Press K to keep"))
        await pilot.press("k")
        await until(pilot, lambda: app.screen.outcome is not None)
        assert app.screen.outcome.kept
        n = be.s.config.network
        assert (n.nic, n.extra_nics, n.team) == ("eno1", ("eno2",), "active-backup")
        assert (n.ipv4.mode, n.ipv4.address, n.ipv4.gateway, n.dns) == ("static", "10.0.2.20", "10.0.2.2",
                                                                         ("10.0.2.3",))
        assert n.search_domain == "lab.example example.com"
        assert "Bond=qxbond0\n" in be.files["10-quantix-mgmt-members.network"]
        # back on the menu: it shows what the host now has, nothing "changed"
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, NetworkMenuScreen) and not app.screen.changed_items())
        assert not on_screen(app, "(changed)")
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, CustomizeScreen))


async def test_a_dialog_keeps_its_invalid_field_and_esc_drops_only_its_edits() -> None:
    app, be = make()
    async with app.run_test(size=SIZE) as pilot:
        scr = await menu(pilot, app)
        await open_dialog(pilot, app, "adapters", AdaptersDialog)
        await pilot.press("enter", "f10")  # eno1 alone
        await until(pilot, lambda: isinstance(app.screen, NetworkMenuScreen))
        draft = scr.draft
        await open_dialog(pilot, app, "vlan", VlanDialog)
        await type_into(pilot, app, "vlan", "4095")
        await pilot.press("enter")
        await until(pilot, lambda: on_screen(app, "network.vlan: '4095' is not a usable VLAN id"))
        assert isinstance(app.screen, VlanDialog) and not bad_glyphs(app)
        await type_into(pilot, app, "vlan", "x1")
        await pilot.press("enter")
        await until(pilot, lambda: on_screen(app, "'x1' is not a number"))
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, NetworkMenuScreen))
        assert scr.draft is draft
        # a static address and no DNS server: the IPv4 dialog closes (its fields are right), Apply names DNS
        await open_dialog(pilot, app, "ipv4", Ipv4Dialog)
        app.screen.query_one("#mode", Button).focus()
        await pilot.press("enter")
        await type_into(pilot, app, "addr", "10.0.2.20")
        # Up/Down move between the fields
        await pilot.press("down")
        assert app.focused is app.screen.query_one("#prefix")
        await pilot.press(*"24", "down", *"10.0.2.2", "up")
        assert app.focused is app.screen.query_one("#prefix")
        await pilot.press("f10")
        await until(pilot, lambda: isinstance(app.screen, NetworkMenuScreen))
        await pilot.press("f10")
        await until(pilot, lambda: "Fixitunder'DNSConfiguration'" in "".join(frame_text(app).split()))
        assert "write_network" not in be.calls


async def test_esc_with_changes_asks_discard_and_cancel() -> None:
    app, be = make()
    async with app.run_test(size=SIZE) as pilot:
        scr = await menu(pilot, app)
        await open_dialog(pilot, app, "hostname", HostnameDialog)
        await type_into(pilot, app, "hostname", "host7")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, NetworkMenuScreen) and on_screen(app, "Hostname (changed)"))
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, ApplyChangesDialog))
        await pilot.press("escape")  # Cancel: back on the menu, the change kept
        await until(pilot, lambda: app.screen is scr)
        assert scr.draft is not None and scr.draft.hostname == "host7"
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, ApplyChangesDialog))
        await pilot.press("right", "enter")  # Discard
        await until(pilot, lambda: isinstance(app.screen, CustomizeScreen))
        assert be.s.config.hostname == "qx-demo" and "write_network" not in be.calls
        # without a change Esc just goes back, and F10 says there is nothing to apply
        await open_item(pilot, app, "network")
        await until(pilot, lambda: isinstance(app.screen, NetworkMenuScreen) and app.screen.draft is not None)
        await pilot.press("f10")
        await until(pilot, lambda: on_screen(app, "Nothing changed"))
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, CustomizeScreen))


async def test_factory_default_asks_for_adapters_first() -> None:
    app, _ = make()
    async with app.run_test(size=SIZE) as pilot:
        await menu(pilot, app)
        m = app.screen.query_one("#netmenu", OptionList)
        m.highlighted = m.get_option_index("ipv4")
        await pilot.press("enter")
        await until(pilot, lambda: on_screen(app, "Choose the adapters first"))
        assert isinstance(app.screen, NetworkMenuScreen)


async def test_description_panes_follow_the_highlighted_item() -> None:
    app, _ = make()
    async with app.run_test(size=SIZE) as pilot:
        await login(pilot, app)
        pane = app.screen.query_one("#describe", Static)
        await until(pilot, lambda: "Adapters, VLAN, IPv4" in frame_text(app))
        await pilot.press("down")  # over "Restore previous" (none kept: not selectable)
        await until(pilot, lambda: "Ping the gateway and DNS servers" in frame_text(app))
        assert pane.is_attached
        await pilot.press("up", "enter")
        await until(pilot, lambda: isinstance(app.screen, NetworkMenuScreen) and app.screen.draft is not None)
        await until(pilot, lambda: "Now: all wired NICs, DHCP (factory default)" in frame_text(app))
        await pilot.press("end")
        await until(pilot, lambda: "Every setting above on a single form" in frame_text(app))
        await pilot.press("up")
        await until(pilot, lambda: "Now: qx-demo  (answer-file)" in frame_text(app))
        assert not bad_glyphs(app)


async def test_up_down_move_between_the_fields_of_a_form() -> None:
    from qx_console.customize import PasswordScreen

    app, _ = make()
    async with app.run_test(size=SIZE) as pilot:
        await login(pilot, app)
        await open_item(pilot, app, "password")
        await until(pilot, lambda: isinstance(app.screen, PasswordScreen) and app.focused is not None)
        assert app.focused is app.screen.query_one("#new")
        await pilot.press("down")
        assert app.focused is app.screen.query_one("#again")
        await pilot.press("up")
        assert app.focused is app.screen.query_one("#new")
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, CustomizeScreen))
        # the menu keeps Up/Down for itself
        menu = app.screen.query_one("#menu", OptionList)
        before = menu.highlighted
        await pilot.press("down")
        assert menu.has_focus and menu.highlighted != before
