"""The console at 3 a.m.: it cannot be quit, late results of a slow host never hurt a screen the operator
left, and every state (errors, dialogs, notices) keeps to the console font.

All against the real app (``run_test`` + Pilot) and the in-memory host; "slow" is
:class:`tests.console.slow.SlowBackend`, which holds every backend call until the test lets it go.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from textual.widgets import Input, OptionList

from qx_console.app import ConsoleApp
from qx_console.customize import ConfirmScreen, CustomizeScreen, LoginScreen, PowerScreen
from qx_console.memory import MemoryBackend, MemoryState
from qx_console.network_menu import NetworkMenuScreen
from qx_console.network_screens import NetworkScreen, SafeApplyScreen
from qx_console.status import StatusScreen
from qx_console.ui import ErrorScreen

from .helpers import bad_glyphs, frame_text, on_screen, push, until
from .slow import SlowBackend
from .test_app import fill_network, login, open_item, open_network_form

pytestmark = pytest.mark.anyio
SIZE = (80, 24)

# Keys Textual (or a terminal) gives a meaning of its own: quit, its "how to quit" hint, suspend, the
# SIGQUIT key, end-of-file, the command palette, copy/cut/paste of a field.
QUIT_KEYS = ("ctrl+q", "ctrl+c", "ctrl+z", "ctrl+backslash", "ctrl+d", "ctrl+p", "ctrl+x", "ctrl+v")


def make(be: MemoryBackend | None = None, **kw) -> ConsoleApp:
    return ConsoleApp(be or MemoryBackend(), refresh_s=3600, **kw)


async def still_here(pilot, app: ConsoleApp, screen: object) -> None:
    """Every quit key on ``screen``: the app runs on, on the same screen, with no toast and no error."""
    errors = list(app.errors)
    for key in QUIT_KEYS:
        await pilot.press(key)
        await pilot.pause()
        assert app.is_running and app.return_code is None, key
        assert app.screen is screen, f"{key} left {type(screen).__name__} for {type(app.screen).__name__}"
    text = frame_text(app)
    assert "quit" not in text.lower() and not bad_glyphs(app), text
    assert app.errors == errors


async def test_no_key_ends_or_leaves_any_screen() -> None:
    """Status, login, Customize, every sub-screen and every dialog, each with every quit key."""
    app = make(confirm_seconds=3600)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, StatusScreen) and on_screen(app, "10.0.2.15"))
        await still_here(pilot, app, app.screen)
        await pilot.press("f2")
        await until(pilot, lambda: isinstance(app.screen, LoginScreen))
        await pilot.press(*"quantix")  # a half-typed password: Ctrl+C/X/V on it changes nothing either
        await still_here(pilot, app, app.screen)
        await pilot.press("ctrl+u", *"quantix-pw", "enter")
        await until(pilot, lambda: isinstance(app.screen, CustomizeScreen))
        await still_here(pilot, app, app.screen)
        for key in ("network", "test", "password", "ssh", "lockdown", "keyboard", "nodeapi", "logs", "services",
                    "updates", "reset", "support"):
            await open_item(pilot, app, key)
            await until(pilot, lambda: not isinstance(app.screen, CustomizeScreen))
            await pilot.pause()
            await still_here(pilot, app, app.screen)
            await pilot.press("escape")
            await until(pilot, lambda: isinstance(app.screen, CustomizeScreen))
        await open_item(pilot, app, "restart")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await still_here(pilot, app, app.screen)
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, CustomizeScreen))
        await pilot.press("f12")
        await until(pilot, lambda: isinstance(app.screen, PowerScreen))
        await still_here(pilot, app, app.screen)
        await pilot.press("escape")
        # the network apply waiting for K: still waiting after every quit key
        await open_network_form(pilot, app)
        await fill_network(pilot, app)
        await pilot.press("f10")
        await until(pilot, lambda: on_screen(app, "Press K to keep"))
        await still_here(pilot, app, app.screen)
        assert isinstance(app.screen, SafeApplyScreen) and app.screen.outcome is None
        await pilot.press("k")
        await until(pilot, lambda: app.screen.outcome is not None)
        # the error panel
        app.show_error("Operation failed", RuntimeError("boom"))
        await until(pilot, lambda: isinstance(app.screen, ErrorScreen))
        await still_here(pilot, app, app.screen)


async def test_textual_notifications_become_the_notice_line() -> None:
    """Textual's toasts (block glyphs) never draw: a notification is the console's one-line notice."""
    app = make()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: on_screen(app, "10.0.2.15"))
        app.notify("Disk [b]almost[/b] full \u2014 50 \u2018GiB\u2019 left", title="Careful", severity="warning")
        await until(pilot, lambda: on_screen(app, "Careful: Disk almost full - 50 'GiB' left"))
        assert not bad_glyphs(app)


# -- a slow host: leaving a screen while its call still runs ----------------------------------------

Action = Callable[[object, ConsoleApp], Awaitable[None]] | None


async def _press(pilot, app, selector: str) -> None:
    await push(pilot, selector)


def press(selector: str) -> Action:
    return lambda pilot, app: _press(pilot, app, selector)


async def _confirm(pilot, app, selector: str) -> None:
    await push(pilot, selector)
    await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
    await push(pilot, "#yes")


async def _set_password(pilot, app) -> None:
    app.screen.query_one("#new", Input).value = "long-enough-1"
    app.screen.query_one("#again", Input).value = "long-enough-1"
    await push(pilot, "#set")


async def _restart_service(pilot, app) -> None:
    await until(pilot, lambda: on_screen(app, "libvirtd"))
    await pilot.press("enter")
    await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
    await push(pilot, "#yes")


async def _reset(pilot, app) -> None:
    await until(pilot, lambda: not app.screen.query_one("#reset").disabled)
    app.screen.query_one("#confirm", Input).value = "qx-demo"
    await push(pilot, "#reset")


async def _run_test(pilot, app) -> None:
    await push(pilot, "#run")


# (case, menu item, what starts the held call once the screen is loaded (None: the screen's own
# loading), the backend call that is held)
SLOW_CASES: list[tuple[str, str, Action, str]] = [
    ("network form loading", "network", None, "load_config"),
    ("network test", "test", _run_test, "load_config"),
    ("root password change", "password", _set_password, "set_root_password"),
    ("SSH screen loading", "ssh", None, "ssh_state"),
    ("SSH enable", "ssh", press("#on"), "set_ssh"),
    ("node certificate", "nodeapi", None, "node_certificate"),
    ("node API token", "nodeapi", press("#show"), "node_api_token"),
    ("logs loading", "logs", None, "logs"),
    ("services loading", "services", None, "services"),
    ("service restart", "services", _restart_service, "restart_service"),
    ("updates loading", "updates", None, "update_status"),
    ("update check", "updates", press("#check"), "update_check"),
    ("update apply with progress", "updates", press("#apply"), "update_apply"),
    ("roll back", "updates", lambda p, a: _confirm(p, a, "#rollback"), "update_rollback"),
    ("set channel", "updates", press("#setchannel"), "set_channel"),
    ("reset loading", "reset", None, "load_config"),
    ("reset", "reset", _reset, "reset_config"),
    ("support bundle", "support", press("#create"), "support_bundle"),
    ("lockdown loading", "lockdown", None, "lockdown"),
    ("keyboard layout", "keyboard", None, "keyboard_layout"),
]


async def settled(pilot, app: ConsoleApp, be: SlowBackend) -> None:
    """Every held call returned and every worker delivered (or dropped) its result."""
    await until(pilot, lambda: be.idle() and all(w.is_finished for w in app.workers))
    await pilot.pause()


def no_harm(app: ConsoleApp, screen_type: type) -> None:
    assert app.is_running and app.return_code is None
    assert isinstance(app.screen, screen_type), type(app.screen).__name__
    assert not any(isinstance(s, ErrorScreen) for s in app.screen_stack), frame_text(app)
    assert not app.errors, app.errors
    assert isinstance(app.screen_stack[1], StatusScreen)  # the status screen is never popped
    assert not bad_glyphs(app)


@pytest.mark.parametrize("case,item,action,call", SLOW_CASES, ids=[c[0] for c in SLOW_CASES])
async def test_esc_while_the_host_is_slow(case: str, item: str, action: Action, call: str) -> None:
    be = SlowBackend()
    app = make(be)
    async with app.run_test(size=SIZE) as pilot:
        await login(pilot, app)
        if action is None:
            be.hold()
            await open_item(pilot, app, item)
        else:
            await open_item(pilot, app, item)
            await until(pilot, lambda: not isinstance(app.screen, CustomizeScreen))
            await settled(pilot, app, be)
            be.hold()
            await action(pilot, app)
        await until(pilot, lambda: be.running(call))
        left = app.screen
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, CustomizeScreen))
        assert left not in app.screen_stack
        be.release()
        await settled(pilot, app, be)
        no_harm(app, CustomizeScreen)
        # and the console goes on as usual
        await open_item(pilot, app, item)
        await until(pilot, lambda: not isinstance(app.screen, CustomizeScreen))
        await settled(pilot, app, be)
        no_harm(app, type(left))
    if call == "update_apply":
        # the progress of a left screen did not abort the apply: it ran to its end
        assert "update_apply" in be.calls and be.s.update_state.pending == "1.3.0"


async def test_login_then_quick_esc_keeps_the_status_screen() -> None:
    """The right password, Esc before the check answered: the answer opens nothing, pops nothing."""
    be = SlowBackend()
    app = make(be)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, StatusScreen) and on_screen(app, "10.0.2.15"))
        await settled(pilot, app, be)
        await pilot.press("f2")
        await until(pilot, lambda: isinstance(app.screen, LoginScreen))
        be.hold()
        await pilot.press(*"quantix-pw", "enter")
        await until(pilot, lambda: be.running("verify_root_password"))
        await pilot.press("enter")  # impatient: a second Enter starts no second check
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, StatusScreen))
        be.release()
        await settled(pilot, app, be)
        no_harm(app, StatusScreen)
        assert be.started.count("verify_root_password") == 1
        assert on_screen(app, "https://10.0.2.15:8443/")  # not a blank screen
        await pilot.press("f2")
        await until(pilot, lambda: isinstance(app.screen, LoginScreen))
        await pilot.press(*"quantix-pw", "enter")
        await until(pilot, lambda: isinstance(app.screen, CustomizeScreen))


async def test_f2_twice_on_a_slow_host_opens_one_login() -> None:
    be = SlowBackend()
    app = make(be)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, StatusScreen) and on_screen(app, "10.0.2.15"))
        await settled(pilot, app, be)
        be.hold()
        await pilot.press("f2")
        await until(pilot, lambda: be.running("lockdown"))
        await pilot.press("f2")
        await pilot.press("f12")  # meanwhile the operator asked for power instead
        await until(pilot, lambda: isinstance(app.screen, LoginScreen))
        be.release()
        await settled(pilot, app, be)
        assert sum(isinstance(s, LoginScreen) for s in app.screen_stack) == 1
        assert app.screen.purpose == "Shut down / Restart" and not app.errors


async def test_logout_while_a_network_restart_runs() -> None:
    be = SlowBackend()
    app = make(be)
    async with app.run_test(size=SIZE) as pilot:
        await login(pilot, app)
        await settled(pilot, app, be)
        await open_item(pilot, app, "restart")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        be.hold()
        await push(pilot, "#yes")
        await until(pilot, lambda: be.running("restart_network"))
        await pilot.press("escape")  # Esc on the menu logs out
        await until(pilot, lambda: isinstance(app.screen, StatusScreen))
        be.release()
        await settled(pilot, app, be)
        no_harm(app, StatusScreen)
    assert "restart_network" in be.calls


async def test_power_dialog_left_while_the_host_answers() -> None:
    be = SlowBackend()
    app = make(be)
    async with app.run_test(size=SIZE) as pilot:
        await login(pilot, app)
        await pilot.press("f12")
        await until(pilot, lambda: isinstance(app.screen, PowerScreen))
        be.hold()
        await push(pilot, "#reboot")
        await until(pilot, lambda: be.running("power"))
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, CustomizeScreen))
        be.release()
        await settled(pilot, app, be)
        no_harm(app, CustomizeScreen)


async def test_a_change_failing_after_its_screen_was_left_is_still_told() -> None:
    """Not silently lost: the failure of a change whose screen is gone becomes the notice line."""
    be = SlowBackend()
    app = make(be)
    async with app.run_test(size=SIZE) as pilot:
        await login(pilot, app)
        await open_item(pilot, app, "updates")
        await until(pilot, lambda: on_screen(app, "1.2.2"))
        await settled(pilot, app, be)
        app.screen.query_one("#channel", Input).value = "Bad!"
        be.hold()
        await push(pilot, "#setchannel")
        await until(pilot, lambda: be.running("set_channel"))
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, CustomizeScreen))
        be.release()
        await until(pilot, lambda: on_screen(app, "Set channel failed: update_channel: 'Bad!' is not a channel"))
        no_harm(app, CustomizeScreen)


async def test_safe_apply_cannot_be_left_and_reports_on_a_slow_host() -> None:
    be = SlowBackend()
    app = make(be)
    async with app.run_test(size=SIZE) as pilot:
        await login(pilot, app)
        await open_network_form(pilot, app)
        await fill_network(pilot, app)
        be.hold()
        await pilot.press("f10")
        await until(pilot, lambda: be.running("write_network"))
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, SafeApplyScreen)
        be.release()
        await until(pilot, lambda: on_screen(app, "Press K to keep"))
        await pilot.press("k")
        await until(pilot, lambda: on_screen(app, "new configuration kept"))
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, NetworkScreen))
        assert not app.errors


# -- long text stays visible -------------------------------------------------------------------------

LONG_FQDN = "host-with-a-long-name." + "sub." * 8 + "datacenter.example.com"
LONG_DNS = ", ".join(f"10.0.{i}.53" for i in range(8))


async def test_text_longer_than_its_field_stays_visible() -> None:
    app = make()
    async with app.run_test(size=SIZE) as pilot:
        await login(pilot, app)
        await open_network_form(pilot, app)
        scr = await fill_network(pilot, app, search=LONG_FQDN, dns=LONG_DNS)
        for wid, value in (("search", LONG_FQDN), ("dns", LONG_DNS)):
            inp = scr.query_one(f"#{wid}", Input)
            inp.focus()
            inp.action_end()
            # the end of the text (where the cursor is) is on screen, in the field's one line
            await until(pilot, lambda: value[-20:] in frame_text(app))
            inp.action_home()
            await until(pilot, lambda: value[:20] in frame_text(app))
        await pilot.press("escape")  # the form, then the network menu (nothing changed there)
        await until(pilot, lambda: isinstance(app.screen, NetworkMenuScreen))
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, CustomizeScreen))
        await open_item(pilot, app, "password")
        await until(pilot, lambda: bool(app.screen.query("#new")))
        app.screen.query_one("#new", Input).focus()
        await pilot.press(*("x" * 70))
        await until(pilot, lambda: app.screen.query_one("#new", Input).value == "x" * 70)
        await until(pilot, lambda: "*" * 40 in frame_text(app))
        assert "x" * 5 not in frame_text(app)


# -- glyphs of error, dialog and notice states ---------------------------------------------------------


async def test_error_dialog_and_notice_states_keep_to_the_console_font() -> None:
    """Field errors, the error panel with foreign text, confirmation dialogs and notices."""
    st = MemoryState()
    st.journal["system"] = ["2026-01-01 host systemd[1]: \u25cf ssh.service \u2014 \u201cOpenBSD\u201d \u2026 \u2713"]
    app = make(MemoryBackend(st))
    async with app.run_test(size=SIZE) as pilot:
        await login(pilot, app)
        await open_network_form(pilot, app)
        await fill_network(pilot, app, v4addr="127.0.0.1", v4prefix="", hostname="1234", vlan="\u0663")
        await pilot.press("f10")
        await until(pilot, lambda: on_screen(app, "Nothing was written"))
        errors = " ".join(str(w.render()) for w in app.screen.query(".error"))
        assert "loopback" in errors and "network.ipv4.prefix: is empty" in errors
        assert "hostname: '1234' is all digits" in errors and "network.vlan" in errors
        assert not bad_glyphs(app)
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, NetworkMenuScreen))
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, CustomizeScreen))
        await open_item(pilot, app, "logs")
        await until(pilot, lambda: on_screen(app, "ssh.service - \"OpenBSD\" ... ok"))
        assert not bad_glyphs(app)
        app.screen.query_one("#grep", Input).value = "([unclosed"
        await pilot.press("slash", "enter")
        await until(pilot, lambda: on_screen(app, "logs.filter: is not a valid pattern"))
        assert "(no entries" not in frame_text(app) and not bad_glyphs(app)
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, CustomizeScreen))
        await open_item(pilot, app, "restart")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert not bad_glyphs(app)
        await pilot.press("escape")
        app.show_error("Operation failed", RuntimeError("systemctl said \u201cno\u201d \u2014 \u2718"))
        await until(pilot, lambda: isinstance(app.screen, ErrorScreen) and on_screen(app, 'said "no" - ?'))
        assert not bad_glyphs(app)
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, CustomizeScreen))
        app.notice("Reverted \u2014 the gateway did not answer")
        await until(pilot, lambda: on_screen(app, "Reverted - the gateway did not answer"))
        assert not bad_glyphs(app)


async def test_test_network_refuses_option_like_input() -> None:
    be = MemoryBackend()
    app = make(be)
    async with app.run_test(size=SIZE) as pilot:
        await login(pilot, app)
        await open_item(pilot, app, "test")
        await until(pilot, lambda: bool(app.screen.query("#target")))
        app.screen.query_one("#target", Input).value = "-f"
        app.screen.query_one("#name", Input).value = "--help"
        await push(pilot, "#run")
        await until(pilot, lambda: on_screen(app, "Not run: correct the field(s) above"))
        text = frame_text(app)
        assert "test.target: label '-f' is not valid" in text and "test.name: label '--help'" in text
        assert not bad_glyphs(app)


async def test_ssh_empty_timeout_is_an_error_not_never() -> None:
    be = MemoryBackend()
    app = make(be)
    async with app.run_test(size=SIZE) as pilot:
        await login(pilot, app)
        await open_item(pilot, app, "ssh")
        await until(pilot, lambda: on_screen(app, "SHA256:"))
        for raw, shown in (("", "ssh.timeout_min: is empty"), ("\u00b2", "is not a number"),
                           ("\u0663\u0660", "is not a number"), ("2000", "is not a timeout")):
            app.screen.query_one("#timeout", Input).value = raw
            await push(pilot, "#on")
            await until(pilot, lambda: on_screen(app, shown))
        assert not any(c.startswith("set_ssh") for c in be.calls)


async def test_services_restart_ssh_honours_the_ssh_setting() -> None:
    be = MemoryBackend()
    app = make(be)
    async with app.run_test(size=SIZE) as pilot:
        await login(pilot, app)
        await open_item(pilot, app, "services")
        await until(pilot, lambda: on_screen(app, "libvirtd"))
        ol = app.screen.query_one("#services", OptionList)
        ol.highlighted = ol.get_option_index("ssh")
        await pilot.press("enter")
        await push(pilot, "#yes")
        await until(pilot, lambda: on_screen(app, "ssh not restarted: ssh: SSH access is turned off"))
        assert "restart_service ssh" not in be.calls and be.s.ssh.active == "inactive"


async def test_reset_shows_the_new_name_and_needs_it_typed_again() -> None:
    be = MemoryBackend()
    app = make(be)
    async with app.run_test(size=SIZE) as pilot:
        await login(pilot, app)
        await open_item(pilot, app, "reset")
        await until(pilot, lambda: not app.screen.query_one("#reset").disabled)
        app.screen.query_one("#confirm", Input).value = "qx-demo"
        await push(pilot, "#reset")
        await until(pilot, lambda: on_screen(app, "Configuration reset to defaults")
                    and not app.screen.query_one("#reset").disabled)
        text = frame_text(app)
        assert any(line.strip("║ ") == "quantix" for line in text.splitlines()) and "qx-demo" not in text
        assert app.screen.query_one("#confirm", Input).value == ""


# -- key bars come from the real bindings ---------------------------------------------------------------


def test_key_bars_name_only_real_bindings() -> None:
    """Each screen's key bar is generated from its BINDINGS (plus the keys its widgets handle), and every
    binding it names leads to an action that exists."""
    from qx_console import customize, network_screens
    from qx_console.network_screens import BaseScreen
    from qx_console.ui import ConsoleModal, keys_text
    from textual.binding import Binding

    screens = [c for m in (customize, network_screens) for c in vars(m).values()
               if isinstance(c, type) and issubclass(c, (BaseScreen, ConsoleModal)) and c.__module__ == m.__name__]
    assert len(screens) >= 14
    for cls in screens + [StatusScreen, ConsoleApp]:
        if issubclass(cls, BaseScreen):
            assert cls.KEYS == keys_text(cls.HINTS, cls.BINDINGS), cls.__name__
        for b in Binding.make_bindings(cls.BINDINGS):
            ns, _, action = b.action.rpartition(".")
            target = {"app": ConsoleApp, "": cls}[ns]
            assert callable(getattr(target, f"action_{action.split('(')[0]}", None)), (cls.__name__, b.action)
    assert StatusScreen.BINDINGS and "Ctrl+R Refresh" in keys_text("", StatusScreen.BINDINGS)
