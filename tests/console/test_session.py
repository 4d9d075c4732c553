"""The Customize session: idle logout, back-off after wrong passwords, the API token hidden again.

Time is the app's injected clock (a number the test moves), so nothing here waits on the real clock.
"""

from __future__ import annotations

import pytest
from textual.widgets import Input

from qx_console.app import ConsoleApp, login_backoff_s
from qx_console.customize import CustomizeScreen, LoginScreen, NodeApiScreen, PowerScreen
from qx_console.network_screens import SafeApplyScreen
from qx_console.status import StatusScreen

from .helpers import frame_text, on_screen, push, until
from .slow import SlowBackend
from .test_app import fill_network, login, open_item, open_network_form

pytestmark = pytest.mark.anyio
SIZE = (80, 24)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(clock: Clock, **kw) -> tuple[ConsoleApp, SlowBackend]:
    be = SlowBackend()
    return ConsoleApp(be, refresh_s=3600, idle_check_s=0.05, clock=clock, **kw), be


async def test_idle_customize_session_logs_out() -> None:
    clock = Clock()
    app, _ = make(clock)
    async with app.run_test(size=SIZE) as pilot:
        await login(pilot, app)
        await open_item(pilot, app, "ssh")
        await until(pilot, lambda: on_screen(app, "SHA256:"))
        clock.now += 599  # just under 10 min: still there
        await pilot.pause(0.2)
        assert not isinstance(app.screen, StatusScreen)
        await pilot.press("tab")  # a key restarts the 10 min
        clock.now += 599
        await pilot.pause(0.2)
        assert not isinstance(app.screen, StatusScreen)
        clock.now += 2
        await until(pilot, lambda: isinstance(app.screen, StatusScreen)
                    and on_screen(app, "Logged out after 10 min without a key press."))
        assert not any(isinstance(s, CustomizeScreen) for s in app.screen_stack)


async def test_idle_login_prompt_closes_but_safe_apply_is_left_to_its_own_timer() -> None:
    clock = Clock()
    app, _ = make(clock, confirm_seconds=3600)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: on_screen(app, "10.0.2.15"))
        await pilot.press("f2")
        await until(pilot, lambda: isinstance(app.screen, LoginScreen))
        clock.now += 601
        await until(pilot, lambda: isinstance(app.screen, StatusScreen))
        await login(pilot, app)
        await open_network_form(pilot, app)
        await fill_network(pilot, app)
        await pilot.press("f10")
        await until(pilot, lambda: on_screen(app, "Press K to keep"))
        clock.now += 601
        await pilot.pause(0.3)
        assert isinstance(app.screen, SafeApplyScreen)  # the operator's answer decides, or its revert
        await pilot.press("k")
        await until(pilot, lambda: app.screen.outcome is not None)
        clock.now += 601
        await until(pilot, lambda: isinstance(app.screen, StatusScreen))


def test_login_backoff_schedule() -> None:
    assert [login_backoff_s(n) for n in range(1, 9)] == [0, 0, 5, 10, 20, 40, 80, 160]
    assert login_backoff_s(30) == 300


async def test_wrong_passwords_back_off_and_are_not_even_checked_meanwhile() -> None:
    clock = Clock()
    app, be = make(clock)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: on_screen(app, "10.0.2.15"))
        await pilot.press("f2")
        await until(pilot, lambda: isinstance(app.screen, LoginScreen))
        for n in (1, 2):
            await pilot.press(*"wrong", "enter")
            await until(pilot, lambda: be.started.count("verify_root_password") == n
                        and on_screen(app, "root password: incorrect - try again"))
        await pilot.press(*"wrong", "enter")
        await until(pilot, lambda: on_screen(app, "3 wrong in a row: wait 5 s"))
        await pilot.press(*"quantix-pw", "enter")  # even the right one: not checked during the wait
        await until(pilot, lambda: on_screen(app, "Too many wrong passwords: try again in 5 s"))
        assert be.started.count("verify_root_password") == 3
        clock.now += 5
        await pilot.press(*"quantix-pw", "enter")
        await until(pilot, lambda: isinstance(app.screen, CustomizeScreen))
        assert app.failed_logins == 0


async def test_api_token_hidden_again_when_covered_or_left() -> None:
    clock = Clock()
    app, be = make(clock)
    token = be.s.node_token
    async with app.run_test(size=SIZE) as pilot:
        await login(pilot, app)
        await open_item(pilot, app, "nodeapi")
        await until(pilot, lambda: isinstance(app.screen, NodeApiScreen) and on_screen(app, "Valid until"))
        await push(pilot, "#show")
        await until(pilot, lambda: on_screen(app, token))
        await pilot.press("f12")  # a dialog over it: the token does not stay on display behind it
        await until(pilot, lambda: isinstance(app.screen, LoginScreen))
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, NodeApiScreen))
        await pilot.pause()
        assert token not in frame_text(app) and on_screen(app, "API token: hidden")
        await push(pilot, "#show")
        await until(pilot, lambda: on_screen(app, token))
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, CustomizeScreen))
        await open_item(pilot, app, "nodeapi")
        await until(pilot, lambda: isinstance(app.screen, NodeApiScreen) and on_screen(app, "Valid until"))
        assert token not in frame_text(app)
        # Show, then Hide before the (slow) read answered: the late token is not shown
        be.hold()
        await push(pilot, "#show")
        await until(pilot, lambda: be.running("node_api_token"))
        await push(pilot, "#hide")
        be.release()
        await until(pilot, lambda: be.idle() and all(w.is_finished for w in app.workers))
        await pilot.pause()
        assert token not in frame_text(app)
        assert not isinstance(app.screen, PowerScreen) and not app.errors
