"""Keys typed ahead of a focus change go where the operator typed them (issue 11).

A serial line or a slow host delivers a burst of keys at once. Textual's App forwards every key it has
queued to the widget focused *then*, while a key that is a binding (Enter, Tab, Up/Down, Backspace)
acts only later: "password<Enter>password<Enter>" put 30 characters into the first field of a slow QEMU
guest and none into the second. Each test here queues a whole string with ``App.post_message`` and no
pause between keys (as the terminal driver does with one read of a burst), then lets the console run:
every field must hold exactly its text and the form must be submitted once. Backend calls go through
:class:`~tests.console.slow.SlowBackend` (held until released) where the screen calls the host.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
from textual import events
from textual.widgets import Input, OptionList, RichLog

from qx_console.app import ConsoleApp
from qx_console.customize import LOG_SOURCES, LoginScreen, LogsScreen, PasswordScreen
from qx_console.firstboot import FirstBootPasswordScreen
from qx_console.installer import InstallerApp
from qx_console.installer_screens import InstallNetworkScreen
from qx_console.installer_screens import PasswordScreen as InstallerPasswordScreen
from qx_console.hostconfig import IPv4Config
from qx_console.linux import LinuxBackend
from qx_console.memory import MemoryBackend
from qx_console.network_menu import ApplyChangesDialog, DnsDialog, Ipv4Dialog, NetworkMenuScreen
from qx_console.status import StatusScreen

from .helpers import until
from .slow import SlowBackend
from .test_app import login, open_item
from .test_firstboot import backend as linux_backend
from .test_firstboot import lock_root
from .test_network_menu import open_dialog

pytestmark = pytest.mark.anyio
SIZE = (80, 24)
PW = "secret123"

_NAMED = {".": "full_stop", "-": "minus", ",": "comma", " ": "space", "/": "slash"}


def burst(app, text: str) -> None:
    """Queue every key of ``text`` on the app at once: ``\\r`` Enter, ``\\t`` Tab, ``\\b`` Backspace,
    ``<name>`` any other key (``<down>``, ``<shift+tab>``, ``<ctrl+u>``)."""
    for tok in re.findall(r"<[a-z0-9_+]+>|.", text, flags=re.S):
        if tok == "\r":
            ev = events.Key("enter", "\r")
        elif tok == "\t":
            ev = events.Key("tab", "\t")
        elif tok == "\b":
            ev = events.Key("backspace", "\x08")
        elif len(tok) > 1:
            ev = events.Key(tok[1:-1], None)
        else:
            ev = events.Key(_NAMED.get(tok, tok), tok)
        app.post_message(ev)


class CountingLinuxBackend(LinuxBackend):
    """The real backend, counting how often the root password is set (a form submitted twice sets it twice)."""

    sets = 0

    def set_root_password(self, password: str) -> None:
        type(self).sets += 1
        super().set_root_password(password)


@pytest.mark.parametrize("sep", ["\r", "\t"])
async def test_first_boot_password_typed_ahead(hostroot: Path, sep: str) -> None:
    from qx_console import shadow

    shadow_file = lock_root(hostroot)
    CountingLinuxBackend.sets = 0
    be = CountingLinuxBackend(hostroot, node=linux_backend(hostroot).node, updates=linux_backend(hostroot).updates)
    app = ConsoleApp(be, refresh_s=3600)
    async with app.run_test(size=SIZE) as pilot:
        # The screen shown and its first field focused (keys typed before that are not covered).
        await until(pilot, lambda: isinstance(app.screen, FirstBootPasswordScreen) and app.screen.focused is not None)
        burst(app, f"{PW}{sep}{PW}\r")
        await until(pilot, lambda: isinstance(app.screen, StatusScreen), timeout=60)
        # Both fields held exactly PW: it is set only when they match, and it verifies. (The dismissed
        # screen's fields are not read: it may be removed by now.)
        assert CountingLinuxBackend.sets == 1
        assert shadow.verify(shadow_file, "root", PW)


async def test_f2_typed_behind_the_first_boot_password_opens_the_login(hostroot: Path) -> None:
    """The first-boot screen closes only when the password is set (a worker): F2 typed right behind the
    second Enter is for the status screen that comes then, and opens the login; it was lost."""
    lock_root(hostroot)
    be = CountingLinuxBackend(hostroot, node=linux_backend(hostroot).node, updates=linux_backend(hostroot).updates)
    app = ConsoleApp(be, refresh_s=3600)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, FirstBootPasswordScreen) and app.screen.focused is not None)
        burst(app, f"{PW}\t{PW}\r<f2>")
        await until(pilot, lambda: isinstance(app.screen, LoginScreen), timeout=60)


@pytest.mark.parametrize("sep", ["\r", "\t", "<down>"])
async def test_customize_password_typed_ahead_with_a_slow_host(sep: str) -> None:
    be = SlowBackend()
    app = ConsoleApp(be, refresh_s=3600)
    async with app.run_test(size=SIZE) as pilot:
        await login(pilot, app)
        app.push_screen(PasswordScreen())
        await until(pilot, lambda: isinstance(app.screen, PasswordScreen) and app.screen.focused is not None)
        scr = app.screen
        be.hold()
        burst(app, f"{PW}{sep}{PW}\r")
        await until(pilot, lambda: be.running("set_root_password"))
        assert (scr.query_one("#new", Input).value, scr.query_one("#again", Input).value) == (PW, PW)
        be.release()
        await until(pilot, lambda: be.idle() and be.s.password == PW)
        assert be.started.count("set_root_password") == 1


async def test_login_password_with_a_correction_typed_ahead() -> None:
    """F2's password: a Backspace typed in the burst removes the character before it, not the last one."""
    be = SlowBackend()
    app = ConsoleApp(be, refresh_s=3600)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, StatusScreen))
        await pilot.press("f2")
        await until(pilot, lambda: isinstance(app.screen, LoginScreen) and app.screen.focused is not None)
        burst(app, "quantix-px\bw\r")
        await until(pilot, lambda: not isinstance(app.screen, (StatusScreen, LoginScreen)))
        assert be.started.count("verify_root_password") == 1
        assert type(app.screen).__name__ == "CustomizeScreen"


async def test_installer_password_typed_ahead(tmp_path: Path) -> None:
    app = InstallerApp(MemoryBackend(), media_dirs=[tmp_path / "no-medium"], log_path=tmp_path / "install.log",
                       only_disks=(), boot_medium=(), status_file=tmp_path / "status.json")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: type(app.screen).__name__ == "WelcomeScreen")
        app.push_screen(InstallerPasswordScreen())
        await until(pilot, lambda: isinstance(app.screen, InstallerPasswordScreen) and app.screen.focused is not None)
        scr = app.screen
        burst(app, f"{PW}\r{PW}\r")
        await until(pilot, lambda: isinstance(app.screen, InstallNetworkScreen), timeout=60)
        assert (scr.query_one("#new", Input).value, scr.query_one("#again", Input).value) == (PW, PW)
        assert app.choices.root_password_hash and app.choices.root_password_hash.startswith("$")
        assert sum(isinstance(s, InstallNetworkScreen) for s in app.screen_stack) == 1


async def one_adapter_menu(pilot, app: ConsoleApp, v4: IPv4Config | None = None) -> NetworkMenuScreen:
    """The network menu with adapter eno1 chosen (the factory default asks for adapters first)."""
    await login(pilot, app)
    await open_item(pilot, app, "network")
    await until(pilot, lambda: isinstance(app.screen, NetworkMenuScreen) and app.screen.draft is not None)
    menu = app.screen
    net = replace(menu.draft.network, nic="eno1")
    menu.draft = replace(menu.draft, network=replace(net, ipv4=v4) if v4 else net)
    return menu


@pytest.mark.parametrize("sep", ["\r", "\t", "<down>"])
async def test_network_dialog_fields_typed_ahead(sep: str) -> None:
    app = ConsoleApp(SlowBackend(), refresh_s=3600, confirm_seconds=30)
    async with app.run_test(size=SIZE) as pilot:
        menu = await one_adapter_menu(pilot, app)
        await open_dialog(pilot, app, "dns", DnsDialog)
        await until(pilot, lambda: app.screen.focused is not None)
        burst(app, f"<ctrl+u>192.0.2.53{sep}<ctrl+u>example.com\r")
        await until(pilot, lambda: app.screen is menu)
        assert tuple(menu.draft.network.dns) == ("192.0.2.53",)
        assert tuple(menu.draft.network.search_domains) == ("example.com",)


async def test_ipv4_dialog_down_from_the_mode_button_then_fields() -> None:
    app = ConsoleApp(SlowBackend(), refresh_s=3600, confirm_seconds=30)
    async with app.run_test(size=SIZE) as pilot:
        menu = await one_adapter_menu(pilot, app, IPv4Config("static", "192.0.2.99", 16, "192.0.2.254"))
        await open_dialog(pilot, app, "ipv4", Ipv4Dialog)
        await until(pilot, lambda: app.screen.focused is not None and app.screen.focused.id == "mode")
        burst(app, "<down><ctrl+u>192.0.2.10\r<ctrl+u>24\r<ctrl+u>192.0.2.1\r")
        await until(pilot, lambda: app.screen is menu)
        v4 = menu.draft.network.ipv4
        assert (v4.address, v4.prefix, v4.gateway) == ("192.0.2.10", 24, "192.0.2.1")


async def test_dialog_right_then_enter_presses_the_button_moved_to() -> None:
    app = ConsoleApp(SlowBackend(), refresh_s=3600)
    answers: list[str | None] = []
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, StatusScreen))
        app.push_screen(ApplyChangesDialog(["DNS"]), answers.append)
        await until(pilot, lambda: isinstance(app.screen, ApplyChangesDialog) and app.screen.focused is not None)
        burst(app, "<right>\r")
        await until(pilot, lambda: bool(answers))
        assert answers == ["discard"]


async def test_logs_filter_typed_ahead_after_slash() -> None:
    be = SlowBackend()
    app = ConsoleApp(be, refresh_s=3600)
    async with app.run_test(size=SIZE) as pilot:
        await login(pilot, app)
        app.push_screen(LogsScreen())
        await until(pilot, lambda: isinstance(app.screen, LogsScreen) and isinstance(app.screen.focused, RichLog))
        scr = app.screen
        burst(app, "/ssh\r")
        await until(pilot, lambda: isinstance(scr.focused, RichLog) and be.idle() and bool(be.started))
        await pilot.pause()
        assert scr.query_one("#grep", Input).value == "ssh"
        assert scr.source == LOG_SOURCES[0]  # the 's' went into the filter, not to the Source key


# -- keys typed right after a key that opens or closes a screen (ui.KeyOrder) ----------------------------


class PasswordsSeen(SlowBackend):
    """The slow in-memory host, recording every password the console asked it to check or set."""

    def __init__(self) -> None:
        super().__init__()
        self.checked: list[str] = []
        self.set_to: list[str] = []

    def verify_root_password(self, password: str) -> bool:
        self.checked.append(password)
        return super().verify_root_password(password)

    def set_root_password(self, password: str) -> None:
        self.set_to.append(password)
        super().set_root_password(password)


async def test_f2_then_the_password_typed_before_the_login_opens() -> None:
    """F2 reads the lockdown mode from the (slow) host before the login dialog opens: the password typed
    behind F2 must wait for the dialog's field, not go to the status screen."""
    be = PasswordsSeen()
    app = ConsoleApp(be, refresh_s=3600)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, StatusScreen) and be.idle() and bool(be.started))
        burst(app, "<f2>quantix-pw\r")
        await until(pilot, lambda: type(app.screen).__name__ == "CustomizeScreen" or bool(be.checked), timeout=30)
        await until(pilot, lambda: type(app.screen).__name__ == "CustomizeScreen" and be.idle())
        assert be.checked == ["quantix-pw"]


async def test_enter_on_a_menu_item_then_the_new_screen_s_fields() -> None:
    """Enter opens Configure Root Password; both passwords typed behind it fill its two fields."""
    be = PasswordsSeen()
    app = ConsoleApp(be, refresh_s=3600)
    async with app.run_test(size=SIZE) as pilot:
        await login(pilot, app)
        menu = app.screen.query_one("#menu", OptionList)
        menu.highlighted = menu.get_option_index("password")
        await until(pilot, lambda: be.idle())
        burst(app, f"\r{PW}\t{PW}\r")
        await until(pilot, lambda: isinstance(app.screen, PasswordScreen) and bool(be.set_to), timeout=30)
        await until(pilot, lambda: be.idle())
        assert be.set_to == [PW]  # both fields held exactly PW (the screen sets it only when they match)


async def test_esc_then_keys_for_the_screen_beneath() -> None:
    """Esc closes Configure Root Password (focus in its field); Down and Enter typed behind it act on the
    Customize menu beneath: the item after the password opens (SSH Access)."""
    be = SlowBackend()
    app = ConsoleApp(be, refresh_s=3600)
    async with app.run_test(size=SIZE) as pilot:
        await login(pilot, app)
        customize = app.screen
        menu = customize.query_one("#menu", OptionList)
        menu.highlighted = menu.get_option_index("password")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, PasswordScreen) and app.screen.focused is not None)
        burst(app, "<escape><down>\r")
        await until(pilot, lambda: type(app.screen).__name__ not in ("PasswordScreen", "CustomizeScreen"), timeout=30)
        assert type(app.screen).__name__ == "SshScreen"
        assert menu.highlighted == menu.get_option_index("ssh")


async def test_keys_typed_behind_the_login_s_enter_reach_the_customize_menu() -> None:
    """The password's Enter starts the (slow) password check, and the screen changes only when it answers:
    Down and Enter typed behind it are for the Customize menu that opens then (Down skips "Restore
    Previous", which has nothing kept, so Test Management Network opens), not for the login's field,
    where they were lost."""
    be = PasswordsSeen()
    app = ConsoleApp(be, refresh_s=3600)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, StatusScreen) and be.idle() and bool(be.started))
        await pilot.press("f2")
        await until(pilot, lambda: isinstance(app.screen, LoginScreen) and be.idle())
        be.hold()
        burst(app, "quantix-pw\r<down>\r")
        await until(pilot, lambda: be.running("verify_root_password"))
        await pilot.pause(0.3)   # the keys behind Enter arrive while the check is held
        be.release()
        await until(pilot, lambda: type(app.screen).__name__ not in ("LoginScreen", "StatusScreen",
                                                                    "CustomizeScreen"), timeout=30)
        await until(pilot, lambda: be.idle())
        customize = app.screen_stack[-2]
        menu = customize.query_one("#menu", OptionList)
        assert be.checked == ["quantix-pw"]
        assert menu.highlighted == menu.get_option_index("test"), menu.highlighted
        assert type(app.screen).__name__ == "TestNetworkScreen", app.screen


async def test_keys_typed_behind_a_wrong_password_s_enter_reach_the_login_field_again() -> None:
    """A wrong password keeps the login open: the keys held behind its Enter are replayed into the field."""
    be = PasswordsSeen()
    app = ConsoleApp(be, refresh_s=3600)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, StatusScreen) and be.idle() and bool(be.started))
        await pilot.press("f2")
        await until(pilot, lambda: isinstance(app.screen, LoginScreen) and be.idle())
        be.hold()
        burst(app, "wrong\rquantix-pw\r")
        await until(pilot, lambda: be.running("verify_root_password"))
        await pilot.pause(0.3)
        be.release()
        await until(pilot, lambda: type(app.screen).__name__ == "CustomizeScreen", timeout=30)
        assert be.checked == ["wrong", "quantix-pw"]


async def test_esc_cancels_the_login_while_its_password_check_is_held() -> None:
    """The keys behind the login's Enter are held while the check runs, but Esc still closes the dialog at
    once (not after the hold's time limit); the check's late answer opens nothing."""
    be = PasswordsSeen()
    app = ConsoleApp(be, refresh_s=3600)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, StatusScreen) and be.idle() and bool(be.started))
        await pilot.press("f2")
        await until(pilot, lambda: isinstance(app.screen, LoginScreen) and be.idle())
        be.hold()
        burst(app, "quantix-pw\r")
        await until(pilot, lambda: be.running("verify_root_password"))
        burst(app, "<escape>")
        await until(pilot, lambda: isinstance(app.screen, StatusScreen), timeout=2)   # the hold limit is 5 s
        be.release()
        await until(pilot, lambda: be.idle())
        await pilot.pause(0.3)
        assert isinstance(app.screen, StatusScreen) and be.checked == ["quantix-pw"]
