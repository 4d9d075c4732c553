"""Pilot tests of every screen and action, against the in-memory backend (fixed host state)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from textual.widgets import Input, OptionList

from qx_console.app import ConsoleApp
from qx_console.backend import UpdateState
from qx_console.customize import CustomizeScreen, LoginScreen, NodeApiScreen, PowerScreen
from qx_console.hostconfig import HostConfig, IPv4Config, IPv6Config, NetworkConfig
from qx_console.memory import MemoryBackend, MemoryState
from qx_console.network_menu import NetworkMenuScreen
from qx_console.network_screens import NetworkScreen, SafeApplyScreen
from qx_console.status import StatusScreen
from qx_console.ui import ErrorScreen

from .helpers import bad_glyphs, frame_text, on_screen, push, until

pytestmark = pytest.mark.anyio
SIZE = (80, 24)


def app_with(state: MemoryState | None = None, **kw) -> tuple[ConsoleApp, MemoryBackend]:
    be = MemoryBackend(state)
    return ConsoleApp(be, refresh_s=3600, **kw), be


async def login(pilot, app) -> None:
    await until(pilot, lambda: isinstance(app.screen, StatusScreen) and on_screen(app, "10.0.2.15"))
    await pilot.press("f2")
    await until(pilot, lambda: isinstance(app.screen, LoginScreen))
    await pilot.press(*"quantix-pw", "enter")
    await until(pilot, lambda: isinstance(app.screen, CustomizeScreen))


async def open_item(pilot, app, key: str) -> None:
    menu = app.screen.query_one("#menu", OptionList)
    menu.highlighted = menu.get_option_index(key)
    await pilot.press("enter")


async def open_network_form(pilot, app) -> None:
    """Customize -> Configure Management Network (the menu) -> All settings on one form."""
    await open_item(pilot, app, "network")
    await until(pilot, lambda: isinstance(app.screen, NetworkMenuScreen) and app.screen.draft is not None)
    menu = app.screen.query_one("#netmenu", OptionList)
    menu.highlighted = menu.get_option_index("form")
    await pilot.press("enter")


async def test_status_screen_and_ready_file(tmp_path: Path) -> None:
    ready = tmp_path / "run/ttyS0.ready"
    app, _ = app_with(ready_file=ready)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: ready.exists())
        text = frame_text(app)
        for s in ("Quantix OS 1.2.3", "https://10.0.2.15:8443/", "qx-demo  (answer-file)", "(dhcp)",
                  "A, good", "VMs running   2", "channel stable", "01h 02m", "F2 Customize"):
            assert s in text, s
        assert json.loads(ready.read_text())["pid"] > 0
        assert not bad_glyphs(app)


async def test_status_shows_the_node_certificate_fingerprint() -> None:
    app, be = app_with()
    fp = be.s.node_cert.sha256
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: on_screen(app, f"API cert      SHA-256 {fp[:47]}"))
        assert f"                      {fp[48:]}" in frame_text(app)
        assert be.s.node_token not in frame_text(app) and "node_api_token" not in be.calls


async def test_status_without_node_certificate_says_so() -> None:
    app, _ = app_with(MemoryState(node_cert=None))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: on_screen(app, "API cert      not created yet (qx-node has not started)"))


UPDATE_LINES = [
    ("available", UpdateState(slots=[], channel="stable", available="1.3.0", last_check="available"),
     "channel stable; 1.3.0 available"),
    ("installed", UpdateState(slots=[], channel="stable", pending="1.3.0", last_check="available"),
     "channel stable; 1.3.0 installed: reboot to start it"),
    ("up to date", UpdateState(slots=[], channel="beta", last_check="up-to-date"), "channel beta; up to date"),
    ("check failed", UpdateState(slots=[], channel="stable", last_check="error"), "channel stable; last check failed"),
    ("never checked", UpdateState(slots=[], channel="stable"), "channel stable; not checked yet"),
]


@pytest.mark.parametrize("case,state,line", UPDATE_LINES, ids=[c[0] for c in UPDATE_LINES])
async def test_status_update_line(case: str, state: UpdateState, line: str) -> None:
    app, _ = app_with(MemoryState(update_state=state))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: on_screen(app, f"Updates       {line}"))


async def test_node_api_screen_shows_token_only_on_request() -> None:
    app, be = app_with()
    cert, token = be.s.node_cert, be.s.node_token
    async with app.run_test(size=SIZE) as pilot:
        await login(pilot, app)
        await open_item(pilot, app, "nodeapi")
        await until(pilot, lambda: isinstance(app.screen, NodeApiScreen) and on_screen(app, "Valid until: 2036-01-01"))
        text = frame_text(app)
        assert all(line in text for line in cert.fingerprint_lines())
        assert "Names: localhost, qx-demo, 127.0.0.1, ::1" in text and "API token: hidden" in text
        assert token not in text and "node_api_token" not in be.calls
        await push(pilot, "#show")
        await until(pilot, lambda: on_screen(app, f"API token: {token}"))
        assert be.calls.count("node_api_token") == 1 and not bad_glyphs(app)
        await push(pilot, "#hide")
        await until(pilot, lambda: on_screen(app, "API token: hidden"))
        assert token not in frame_text(app)
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, CustomizeScreen))


async def test_node_api_screen_before_qx_node_created_its_identity() -> None:
    app, be = app_with(MemoryState(node_cert=None, node_token=None))
    async with app.run_test(size=SIZE) as pilot:
        await login(pilot, app)
        await open_item(pilot, app, "nodeapi")
        await until(pilot, lambda: on_screen(app, "TLS certificate: Not available: qx-node has not created its TLS"))
        await push(pilot, "#show")
        await until(pilot, lambda: on_screen(app, "API token: qx-node has not created its API token yet"))


async def test_status_shows_updates_not_available() -> None:
    app, _ = app_with(MemoryState(updates_available=False))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: on_screen(app, "not available: 'qx-update' is not installed"))


async def test_wrong_root_password_is_refused_inline() -> None:
    app, _ = app_with()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: on_screen(app, "10.0.2.15"))
        await pilot.press("f2")
        await until(pilot, lambda: isinstance(app.screen, LoginScreen))
        await pilot.press(*"wrong", "enter")
        await until(pilot, lambda: on_screen(app, "root password: incorrect"))
        assert isinstance(app.screen, LoginScreen) and "wrong" not in frame_text(app)
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, StatusScreen))


async def test_lockdown_keeps_the_console_in_and_is_switched_with_the_password() -> None:
    """Lockdown mode keeps SSH and the API out, never the physical console: F2 says it is on, and
    Customize > Lockdown Mode switches it, after the root password once more."""
    app, be = app_with(MemoryState(config=HostConfig(hostname="locked", lockdown=True), lockdown=True))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: on_screen(app, "locked"))
        await pilot.press("f2")
        await until(pilot, lambda: isinstance(app.screen, LoginScreen) and on_screen(app, "lockdown mode is on"))
        await pilot.press(*"quantix-pw", "enter")
        await until(pilot, lambda: isinstance(app.screen, CustomizeScreen))
        # SSH cannot be turned on meanwhile
        await open_item(pilot, app, "ssh")
        await push(pilot, "#on")
        await until(pilot, lambda: on_screen(app, "lockdown mode is on: SSH stays off"))
        assert be.s.ssh.active == "inactive" and not any(c.startswith("set_ssh") for c in be.calls)
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, CustomizeScreen))
        await open_item(pilot, app, "lockdown")
        await until(pilot, lambda: on_screen(app, "Lockdown mode: ON"))
        await push(pilot, "#switch")
        await until(pilot, lambda: isinstance(app.screen, LoginScreen))
        await pilot.press(*"wrong", "enter")
        await until(pilot, lambda: on_screen(app, "incorrect"))
        await pilot.press("escape")
        await until(pilot, lambda: on_screen(app, "Not changed."))
        assert be.s.lockdown
        await push(pilot, "#switch")
        await until(pilot, lambda: isinstance(app.screen, LoginScreen))
        await pilot.press(*"quantix-pw", "enter")
        await until(pilot, lambda: on_screen(app, "Lockdown mode: off"))
        assert not be.s.lockdown and "set_lockdown False" in be.calls
        # ...and on again: SSH is stopped with it
        be.set_ssh(True, 5)
        await push(pilot, "#switch")
        await until(pilot, lambda: isinstance(app.screen, LoginScreen))
        await pilot.press(*"quantix-pw", "enter")
        await until(pilot, lambda: on_screen(app, "Lockdown mode: ON"))
        assert be.s.lockdown and be.s.ssh.active == "inactive"
        assert not bad_glyphs(app)


async def test_customize_menu_lists_every_item() -> None:
    app, _ = app_with()
    async with app.run_test(size=SIZE) as pilot:
        await login(pilot, app)
        text = frame_text(app)
        for item in ("Configure Management Network", "Restore Previous Network", "Test Management Network",
                     "Restart Management Network", "Root Password", "SSH Access", "Node API Certificate and Token",
                     "View System Logs", "Services", "Updates", "Reset System Configuration", "Lockdown Mode",
                     "Keyboard Layout", "Support Bundle"):
            assert item in text
        assert not bad_glyphs(app)


async def choose_nic(pilot, scr: NetworkScreen, nic: str) -> None:
    """Highlight an adapter in the form's list, as Up/Down does ("*all*": the factory default)."""
    opts = scr.query_one("#nic", OptionList)
    opts.highlighted = opts.get_option_index(nic)
    await until(pilot, lambda: scr.chosen_nic() == ("" if nic == "*all*" else nic)
                and scr.query_one("#v4mode").disabled == (nic == "*all*"))  # the form followed the choice


async def form_ready(pilot, app) -> NetworkScreen:
    """The network form is loaded (its last step: the adapter list gets the focus)."""
    await until(pilot, lambda: isinstance(app.screen, NetworkScreen) and bool(app.screen.query("#nic"))
                and app.screen.query_one("#nic", OptionList).has_focus)
    return app.screen


async def fill_network(pilot, app, **values: str) -> NetworkScreen:
    scr = await form_ready(pilot, app)
    await choose_nic(pilot, scr, values.pop("nic", "eno1"))
    if values.pop("static", "yes") == "yes" and scr.v4_mode != "static":
        scr.query_one("#v4mode").press()
        await pilot.pause()
    if values.pop("v6static", "") and scr.v6_mode != "static":
        while scr.v6_mode != "static":
            scr.query_one("#v6mode").press()
            await pilot.pause()
    base = {"v4addr": "10.0.2.20", "v4prefix": "24", "v4gw": "10.0.2.2", "dns": "10.0.2.3", "hostname": "host1",
            "vlan": "", "search": ""}
    base.update(values)
    for wid, v in base.items():
        scr.query_one(f"#{wid}", Input).value = v
    await pilot.pause()
    return scr


async def test_network_form_in_dhcp_mode_greys_out_static_fields() -> None:
    app, _ = app_with()
    async with app.run_test(size=SIZE) as pilot:
        await login(pilot, app)
        await open_network_form(pilot, app)
        await until(pilot, lambda: isinstance(app.screen, NetworkScreen) and on_screen(app, "eno2"))
        scr = app.screen
        await until(pilot, lambda: scr.query_one("#nic", OptionList).has_focus)
        # nothing stored: the factory default "All adapters" is highlighted, only the hostname applies
        assert scr.chosen_nic() == "" and "All adapters: DHCP on every wired NIC" in frame_text(app)
        assert all(scr.query_one(f"#{w}", Input).disabled for w in ("v4addr", "dns", "search", "vlan"))
        assert not scr.query_one("#hostname", Input).disabled
        await pilot.press("down")
        await until(pilot, lambda: scr.chosen_nic() == "eno1")
        assert scr.v4_mode == "dhcp" and scr.v6_mode == "auto"
        assert all(scr.query_one(f"#{w}", Input).disabled for w in ("v4addr", "v4prefix", "v4gw", "v6addr"))
        assert not scr.query_one("#dns", Input).disabled
        scr.query_one("#v4mode").press()
        await until(pilot, lambda: not scr.query_one("#v4addr", Input).disabled)


BAD_INPUT = [
    ("invalid IPv4 address", {"v4addr": "10.0.2.300"}, "network.ipv4.address"),
    ("invalid prefix", {"v4prefix": "33"}, "network.ipv4.prefix"),
    ("gateway outside subnet", {"v4gw": "192.168.9.1"}, "network.ipv4.gateway"),
    ("VLAN 0", {"vlan": "0"}, "network.vlan"),
    ("VLAN 4095", {"vlan": "4095"}, "network.vlan"),
    ("hostname with illegal chars", {"hostname": "my_host"}, "hostname"),
    ("empty DNS", {"dns": ""}, "network.dns"),
    ("invalid IPv6 address", {"v6static": "yes", "v6addr": "2001:db8::zz", "v6prefix": "64"},
     "network.ipv6.address"),
]


@pytest.mark.parametrize("case,values,field", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
async def test_bad_network_input_shows_field_and_writes_nothing(case: str, values: dict, field: str) -> None:
    app, be = app_with()
    files_before = dict(be.files)
    async with app.run_test(size=SIZE) as pilot:
        await login(pilot, app)
        await open_network_form(pilot, app)
        await fill_network(pilot, app, **values)
        await pilot.press("f10")
        await until(pilot, lambda: on_screen(app, "Nothing was written"))
        assert any(field in str(w.render()) for w in app.screen.query(".error")), field
        assert isinstance(app.screen, NetworkScreen)
    assert "write_network" not in be.calls and be.files == files_before


async def test_network_change_confirmed_is_kept() -> None:
    app, be = app_with()
    async with app.run_test(size=SIZE) as pilot:
        await login(pilot, app)
        await open_network_form(pilot, app)
        await fill_network(pilot, app, vlan="42", search="example.com")
        assert not bad_glyphs(app)
        await pilot.press("f10")
        await until(pilot, lambda: on_screen(app, "Press K to keep"))
        assert not bad_glyphs(app)
        await pilot.press("k")
        await until(pilot, lambda: on_screen(app, "new configuration kept"))
    assert be.s.config.network.ipv4.address == "10.0.2.20" and be.s.config.network.vlan == 42
    assert "Address=10.0.2.20/24\n" in be.files["10-quantix-mgmt.network"]
    assert be.s.provenance["network.ipv4"] == "console" and be.pending() is None


async def test_network_change_not_confirmed_reverts_by_itself() -> None:
    app, be = app_with(confirm_seconds=0.5)
    before = (be.s.config, dict(be.files))
    async with app.run_test(size=SIZE) as pilot:
        await login(pilot, app)
        await open_network_form(pilot, app)
        await fill_network(pilot, app)
        await pilot.press("f10")
        await until(pilot, lambda: on_screen(app, "not confirmed in time"))
    assert (be.s.config, be.files) == before


async def test_network_change_losing_gateway_reverts() -> None:
    app, be = app_with()
    before = (be.s.config, dict(be.files))
    async with app.run_test(size=SIZE) as pilot:
        await login(pilot, app)
        await open_network_form(pilot, app)
        await fill_network(pilot, app, v4addr="10.9.0.5", v4gw="10.9.0.1")
        await pilot.press("f10")
        await until(pilot, lambda: on_screen(app, "gateway 10.9.0.1: no answer"))
        assert "Reverted" in frame_text(app)
    assert (be.s.config, be.files) == before


async def test_revert_key_reverts_at_once() -> None:
    app, be = app_with()
    before = be.s.config
    async with app.run_test(size=SIZE) as pilot:
        await login(pilot, app)
        await open_network_form(pilot, app)
        await fill_network(pilot, app)
        await pilot.press("f10")
        await until(pilot, lambda: on_screen(app, "Press K to keep"))
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, SafeApplyScreen) and app.screen.outcome is not None)
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, NetworkScreen))
    assert be.s.config == before


async def test_restore_previous_and_restart_network() -> None:
    app, be = app_with()
    async with app.run_test(size=SIZE) as pilot:
        await login(pilot, app)
        menu = app.screen.query_one("#menu", OptionList)
        restore = menu.get_option("restore")
        # nothing to restore: the item is not offered (Enter on it does nothing)
        await until(pilot, lambda: restore.disabled)
        be.write_network(replace(be.s.config, hostname="other"))
        # back from any sub-screen the menu asks again
        await open_item(pilot, app, "test")
        await until(pilot, lambda: bool(app.screen.query("#run")))
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, CustomizeScreen) and not restore.disabled)
        await open_item(pilot, app, "restore")
        await push(pilot, "#yes")
        await until(pilot, lambda: on_screen(app, "Previous network configuration restored"))
        assert be.s.config.hostname == "qx-demo"
        await open_item(pilot, app, "restart")
        await push(pilot, "#yes")
        await until(pilot, lambda: on_screen(app, "Management network restarted"))
    assert "restart_network" in be.calls


async def test_test_network_screen() -> None:
    st = MemoryState(config=HostConfig(hostname="h", network=NetworkConfig(
        nic="eno1", ipv4=IPv4Config("static", "10.0.2.15", 24, "10.0.2.2"), ipv6=IPv6Config("off"),
        dns=("10.0.2.3",))))
    app, _ = app_with(st)
    async with app.run_test(size=SIZE) as pilot:
        await login(pilot, app)
        await open_item(pilot, app, "test")
        await until(pilot, lambda: bool(app.screen.query("#target")))
        app.screen.query_one("#target", Input).value = "192.0.2.99"
        await push(pilot, "#run")
        await until(pilot, lambda: on_screen(app, "192.0.2.99"))
        text = frame_text(app)
        assert "OK   gateway  10.0.2.2" in text and "OK   dns      10.0.2.3" in text
        assert "FAIL custom   192.0.2.99" in text and "OK   resolve" in text


async def test_root_password_screen() -> None:
    app, be = app_with()
    async with app.run_test(size=SIZE) as pilot:
        await login(pilot, app)
        await open_item(pilot, app, "password")
        await until(pilot, lambda: bool(app.screen.query("#new")))
        app.screen.query_one("#new", Input).value = "short"
        app.screen.query_one("#again", Input).value = "short"
        await push(pilot, "#set")
        await until(pilot, lambda: on_screen(app, "new password: is shorter than 8"))
        app.screen.query_one("#new", Input).value = "long-enough-1"
        app.screen.query_one("#again", Input).value = "long-enough-2"
        await push(pilot, "#set")
        await until(pilot, lambda: on_screen(app, "confirm password: does not match"))
        app.screen.query_one("#again", Input).value = "long-enough-1"
        await push(pilot, "#set")
        await until(pilot, lambda: on_screen(app, "Root password changed"))
    assert be.s.password == "long-enough-1"


async def test_ssh_screen() -> None:
    app, be = app_with()
    async with app.run_test(size=SIZE) as pilot:
        await login(pilot, app)
        await open_item(pilot, app, "ssh")
        await until(pilot, lambda: on_screen(app, "SHA256:"))
        app.screen.query_one("#timeout", Input).value = "abc"
        await push(pilot, "#on")
        await until(pilot, lambda: on_screen(app, "ssh.timeout_min"))
        app.screen.query_one("#timeout", Input).value = "30"
        await push(pilot, "#on")
        await until(pilot, lambda: on_screen(app, "SSH service: active"))
        await push(pilot, "#off")
        await until(pilot, lambda: on_screen(app, "SSH service: inactive"))
    assert "set_ssh True 30" in be.calls and be.s.config.ssh.enabled is False


async def test_logs_screen() -> None:
    app, _ = app_with()
    async with app.run_test(size=SIZE) as pilot:
        await login(pilot, app)
        await open_item(pilot, app, "logs")
        await until(pilot, lambda: on_screen(app, "system[1]: message 4"))
        await pilot.press("s")
        await until(pilot, lambda: on_screen(app, "qx-node[1]: message 4"))
        await pilot.press("slash")
        app.screen.query_one("#grep", Input).value = "message 2"
        await pilot.press("enter")
        await until(pilot, lambda: on_screen(app, "message 2") and not on_screen(app, "message 3"))
        await pilot.press("f")
        await until(pilot, lambda: on_screen(app, "Follow: on"))
        assert not bad_glyphs(app)


async def test_services_screen_restart() -> None:
    app, be = app_with()
    async with app.run_test(size=SIZE) as pilot:
        await login(pilot, app)
        await open_item(pilot, app, "services")
        await until(pilot, lambda: on_screen(app, "libvirtd"))
        await pilot.press("enter")
        await until(pilot, lambda: on_screen(app, "Restart qx-node?"))
        await push(pilot, "#yes")
        await until(pilot, lambda: on_screen(app, "qx-node restarted"))
    assert "restart_service qx-node" in be.calls


async def test_updates_screen_actions() -> None:
    app, be = app_with()
    async with app.run_test(size=SIZE) as pilot:
        await login(pilot, app)
        await open_item(pilot, app, "updates")
        await until(pilot, lambda: on_screen(app, "1.2.2"))
        assert "active" in frame_text(app)
        await push(pilot, "#check")
        await until(pilot, lambda: on_screen(app, "Available: 1.3.0"))
        await push(pilot, "#apply")
        await until(pilot, lambda: on_screen(app, "100 %") and on_screen(app, "installed in slot B"))
        assert not bad_glyphs(app)
        await push(pilot, "#rollback")
        await push(pilot, "#yes")
        await until(pilot, lambda: on_screen(app, "slot B boots next"))
        app.screen.query_one("#channel", Input).value = "Bad!"
        await push(pilot, "#setchannel")
        await until(pilot, lambda: on_screen(app, "update_channel"))
        app.screen.query_one("#channel", Input).value = "beta"
        await push(pilot, "#setchannel")
        await until(pilot, lambda: on_screen(app, "Channel set to beta"))
    assert {"update_apply", "update_rollback"} <= set(be.calls) and be.s.config.update_channel == "beta"


async def test_updates_not_available_state() -> None:
    app, be = app_with(MemoryState(updates_available=False))
    async with app.run_test(size=SIZE) as pilot:
        await login(pilot, app)
        await open_item(pilot, app, "updates")
        await until(pilot, lambda: on_screen(app, "Not available: 'qx-update' is not installed"))
        assert all(b.disabled for b in app.screen.query("Button"))


async def test_reset_needs_the_hostname() -> None:
    app, be = app_with()
    async with app.run_test(size=SIZE) as pilot:
        await login(pilot, app)
        await open_item(pilot, app, "reset")
        await until(pilot, lambda: on_screen(app, "qx-demo"))
        app.screen.query_one("#confirm", Input).value = "qx-dem"
        await push(pilot, "#reset")
        await until(pilot, lambda: on_screen(app, "hostname: does not match"))
        assert "reset_config" not in be.calls
        app.screen.query_one("#confirm", Input).value = "qx-demo"
        await push(pilot, "#reset")
        await until(pilot, lambda: on_screen(app, "Configuration reset to defaults"))
    assert be.s.config == HostConfig()


async def test_f12_power_needs_password_and_confirmation() -> None:
    app, be = app_with()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: on_screen(app, "10.0.2.15"))
        await pilot.press("f12")
        await until(pilot, lambda: isinstance(app.screen, LoginScreen))
        await pilot.press(*"quantix-pw", "enter")
        await until(pilot, lambda: isinstance(app.screen, PowerScreen))
        assert not bad_glyphs(app)
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, StatusScreen))
        assert not any(c.startswith("power") for c in be.calls)
        await pilot.press("f12")
        await until(pilot, lambda: isinstance(app.screen, LoginScreen))
        await pilot.press(*"quantix-pw", "enter")
        await until(pilot, lambda: isinstance(app.screen, PowerScreen))
        await push(pilot, "#reboot")
        await until(pilot, lambda: "power reboot" in be.calls)


class BrokenBackend(MemoryBackend):
    def status(self):
        raise RuntimeError("status exploded")

    def list_nics(self):
        raise ValueError("nic listing exploded")


async def test_errors_never_stop_the_console() -> None:
    be = BrokenBackend()
    app = ConsoleApp(be, refresh_s=3600)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: on_screen(app, "Host status unavailable: RuntimeError: status exploded"))
        await login_from_anywhere(pilot, app)
        await open_item(pilot, app, "network")
        await until(pilot, lambda: isinstance(app.screen, ErrorScreen))
        assert "nic listing exploded" in frame_text(app)
        await pilot.press("escape")
        # the menu works on without the NIC list (hostname, DNS... stay editable)
        await until(pilot, lambda: isinstance(app.screen, NetworkMenuScreen) and app.screen.draft is not None)
        # a bug that reaches Textual itself: shown, screens rebuilt, app still running
        app.screen.post_message(_Boom())
        await until(pilot, lambda: isinstance(app.screen, ErrorScreen) and on_screen(app, "boom in a handler"),
                    raw=True)
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, StatusScreen), raw=True)
        await pilot.press("f2")
        await until(pilot, lambda: isinstance(app.screen, LoginScreen), raw=True)
        assert app.is_running and app.return_code is None


async def test_error_in_a_screen_callback_opens_the_error_panel() -> None:
    """A bug in the UI callback of a worker (not in the blocking call) is shown, not dropped silently."""
    from qx_console.ui import in_thread

    app, _ = app_with()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: on_screen(app, "10.0.2.15"))

        def broken(_: object) -> None:
            raise KeyError("callback exploded")
        in_thread(app.screen, lambda: 42, broken)
        await until(pilot, lambda: isinstance(app.screen, ErrorScreen) and on_screen(app, "callback exploded"))
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, StatusScreen))


async def login_from_anywhere(pilot, app) -> None:
    await pilot.press("f2")
    await until(pilot, lambda: isinstance(app.screen, LoginScreen))
    await pilot.press(*"quantix-pw", "enter")
    await until(pilot, lambda: isinstance(app.screen, CustomizeScreen))


from textual.message import Message  # noqa: E402


class _Boom(Message):
    pass


def _boom(self, message: _Boom) -> None:
    raise RuntimeError("boom in a handler")


NetworkScreen.on__boom = _boom  # type: ignore[attr-defined]
NetworkMenuScreen.on__boom = _boom  # type: ignore[attr-defined]


async def test_test_network_with_dhcp_pings_the_routed_gateway() -> None:
    app, _ = app_with()
    async with app.run_test(size=SIZE) as pilot:
        await login(pilot, app)
        await open_item(pilot, app, "test")
        await push(pilot, "#run")
        await until(pilot, lambda: on_screen(app, "OK   gateway  10.0.2.2"))


async def test_status_arrives_when_reading_it_takes_longer_than_the_refresh_interval() -> None:
    """A slow host: every status read takes 0.4 s, the screen refreshes every 0.05 s. A new read must not
    supersede the one in flight (each tick did, and no result ever arrived: 'Gathering host status...'
    for good on a slow installed host); the first read's result is shown."""
    from .slow import SlowBackend

    be = SlowBackend(delay_s=0.4)
    app = ConsoleApp(be, refresh_s=0.05)
    async with app.run_test(size=(80, 25)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, StatusScreen) and on_screen(app, "10.0.2.15"))
        # While one read is in flight the ticks start none of their own.
        assert be.started.count("status") <= be.finished.count("status") + 1
