"""A hostile operator at the console: every key on every Customize screen at 40x10 and 300x100, and
pastes the schema never allows (control and escape sequences, non-ASCII, a zero-width space, 1 MB) into
every field. The console must run on, on the same screen, with no error panel and only console glyphs;
a refused paste leaves the field as it was.

The real app (``run_test`` + Pilot) on the in-memory host."""

from __future__ import annotations

import pytest
from textual import events

from qx_console.app import ConsoleApp
from qx_console.customize import CustomizeScreen, LoginScreen
from qx_console.memory import MemoryBackend
from qx_console.status import StatusScreen
from qx_console.ui import ALLOWED_GLYPHS, FieldInput, SecretInput, terminal_safe

from .helpers import bad_glyphs, frame_text, on_screen, until
from .test_app import login, open_item

pytestmark = pytest.mark.anyio
ITEMS = ("network", "test", "password", "ssh", "lockdown", "keyboard", "nodeapi", "logs", "services", "updates",
         "reset", "support")
# Everything but the keys that leave or act on purpose (Esc, Enter, Space, F12 power; tested elsewhere).
KEYS = ([f"f{i}" for i in range(1, 12)] + [f"ctrl+{c}" for c in "abcdefghijklnopqrstuvwxyz"] +
        ["tab", "shift+tab", "up", "down", "left", "right", "home", "end", "pageup", "pagedown", "backspace",
         "delete", "insert", "ctrl+backslash", "question_mark", "slash", "a", "Z", "1"])
BAD_PASTES = ["\x1b]52;c;cXdvbmVk\x07\x1b[2J", "ab\u00e9\u200bcd", "x\ty", "A" * 1_000_000]


async def back_to(pilot, app: ConsoleApp, screen: object) -> None:
    """A key that opened something (F2's login on a sub-screen, a dialog): Esc until ``screen`` is on top."""
    for _ in range(4):
        if app.screen is screen:
            return
        await pilot.press("escape")
        await pilot.pause()
    assert app.screen is screen, type(app.screen).__name__


@pytest.mark.parametrize("size", [(40, 10), (300, 100)], ids=["40x10", "300x100"])
async def test_every_key_on_every_screen_at_any_size(size: tuple[int, int]) -> None:
    app = ConsoleApp(MemoryBackend(), refresh_s=3600, confirm_seconds=3600)
    async with app.run_test(size=(80, 24)) as pilot:
        await login(pilot, app)
        await pilot.resize_terminal(*size)
        await pilot.pause()
        for item in ITEMS:
            await open_item(pilot, app, item)
            await until(pilot, lambda: not isinstance(app.screen, CustomizeScreen))
            scr = app.screen
            await until(pilot, lambda: not scr.query("#loading"))
            for key in KEYS:
                await pilot.press(key)
                await pilot.pause()
                assert app.is_running and app.return_code is None, (item, key)
                await back_to(pilot, app, scr)
            assert app.errors == [], (item, app.errors)
            # At 40 columns Textual cuts a long border title with its own ellipsis, which nothing of
            # the console can reach: the driver maps it (ui.terminal_safe), so the terminal gets none.
            assert bad_glyphs(app) <= ({"\u2026"} if size[0] < 60 else set()), (item, bad_glyphs(app))
            assert not {c for c in terminal_safe(frame_text(app)) if ord(c) > 126 and c not in ALLOWED_GLYPHS}
            await back_to(pilot, app, scr)
            await pilot.press("escape")
            await until(pilot, lambda: isinstance(app.screen, CustomizeScreen))


async def paste_everywhere(pilot, app: ConsoleApp, where: str) -> int:
    """Every bad paste into every field of the screen on top; returns how many fields there were."""
    fields = [f for f in app.screen.query(FieldInput) if f.focusable]
    for f in fields:
        app.screen.set_focus(f)
        await pilot.pause()
        before = f.value
        for text in BAD_PASTES:
            f.value = before
            app.post_message(events.Paste(text))
            await pilot.pause()
            if isinstance(f, SecretInput) and not any(ord(c) < 32 or 127 <= ord(c) < 160 for c in text) \
                    and len(text) <= SecretInput.MAX_LENGTH:
                # A password may hold any printable character: the mask shows none of it.
                assert f.value == before + text, (where, f.id)
            else:
                assert f.value == before, (where, f.id, text[:20])
            assert not bad_glyphs(app), (where, f.id, text[:20], bad_glyphs(app))
        f.value = before
        app.post_message(events.Paste("x" * 300))  # a long paste the field allows
        await pilot.pause()
        assert f.value.endswith("x" * 300) or (isinstance(f, SecretInput) and len(f.value) >= 300), (where, f.id)
        f.value = before
    assert app.errors == [], (where, app.errors)
    assert not bad_glyphs(app), (where, bad_glyphs(app))
    return len(fields)


async def test_bad_pastes_into_every_field_are_refused() -> None:
    app = ConsoleApp(MemoryBackend(), refresh_s=3600)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, StatusScreen) and on_screen(app, "10.0.2.15"))
        await pilot.press("f2")
        await until(pilot, lambda: isinstance(app.screen, LoginScreen))
        assert await paste_everywhere(pilot, app, "login") == 1
        await pilot.press("escape")
        await login(pilot, app)
        n = 0
        for item in ITEMS:
            await open_item(pilot, app, item)
            await until(pilot, lambda: not isinstance(app.screen, CustomizeScreen))
            scr = app.screen
            await until(pilot, lambda: not scr.query("#loading"))
            n += await paste_everywhere(pilot, app, item)
            await back_to(pilot, app, scr)
            await pilot.press("escape")
            await until(pilot, lambda: isinstance(app.screen, CustomizeScreen), timeout=10)
        assert n >= 6, frame_text(app)  # test (2), password (2), ssh, logs, reset at least


def test_terminal_safe_keeps_cells_and_escape_sequences() -> None:
    out = terminal_safe("\x1b[1;31mab\u2026\u2500\u2551\u00e9\u4e2d\u200b\ud800x\x1b[0m")
    assert out == "\x1b[1;31mab.\u2500\u2551????x\x1b[0m"  # e-acute 1 cell, the CJK 2, ZWSP 0, surrogate 1


async def test_esc_mashed_while_each_screen_waits_for_a_slow_host() -> None:
    """Every Customize item opened while the host holds every call, then Esc five times in one burst:
    out of the item, out of Customize (logged out), and nothing when the held calls come back late."""
    from textual import events as ev

    from .slow import SlowBackend

    be = SlowBackend()
    app = ConsoleApp(be, refresh_s=3600, confirm_seconds=3600)
    async with app.run_test(size=(80, 24)) as pilot:
        for item in ITEMS:
            await login(pilot, app)
            be.hold()
            await open_item(pilot, app, item)
            await until(pilot, lambda: not isinstance(app.screen, CustomizeScreen))
            await pilot.pause()
            for _ in range(5):
                app.post_message(ev.Key("escape", "\x1b"))
            await until(pilot, lambda: isinstance(app.screen, StatusScreen))
            be.release()
            await until(pilot, be.idle)
            await pilot.pause()
            assert isinstance(app.screen, StatusScreen) and app.is_running, item
            assert app.errors == [], (item, app.errors)
            assert not bad_glyphs(app), item
