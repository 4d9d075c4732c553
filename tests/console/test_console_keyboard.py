"""Keyboard layout from the console (Customize > Keyboard Layout): the installer's list, stored in
vconsole.conf on the data partition for the next boots and loaded at once where a console has a keymap."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import OptionList

from qx_common.errors import UserError
from qx_console import keyboard
from qx_console.app import ConsoleApp
from qx_console.customize import KeyboardScreen
from qx_console.linux import LinuxBackend
from qx_console.memory import MemoryBackend

from .helpers import bad_glyphs, on_screen, until
from .test_app import login, open_item

pytestmark = pytest.mark.anyio


async def test_choosing_a_layout_on_the_console() -> None:
    be = MemoryBackend()
    app = ConsoleApp(be, refresh_s=3600)
    async with app.run_test(size=(80, 24)) as pilot:
        await login(pilot, app)
        await open_item(pilot, app, "keyboard")
        await until(pilot, lambda: isinstance(app.screen, KeyboardScreen) and on_screen(app, "Layout: English (US)"))
        layouts = app.screen.query_one("#layouts", OptionList)
        assert [layouts.get_option_at_index(i).id for i in range(layouts.option_count)] == list(keyboard.LAYOUTS)
        layouts.highlighted = list(keyboard.LAYOUTS).index("de")
        await pilot.press("enter")
        await until(pilot, lambda: on_screen(app, "Keyboard layout de applied.") and on_screen(app, "German (de)"))
        assert be.s.keyboard == "de" and not bad_glyphs(app)


def test_real_backend_stores_the_layout_for_the_next_boots(hostroot: Path) -> None:
    be = LinuxBackend(hostroot)
    assert be.keyboard_layout() == "us"
    note = be.set_keyboard_layout("fr")
    # stored whatever loadkeys could do here (no console keymap in a test: the reason comes back)
    assert (hostroot / keyboard.VCONSOLE_CONF).read_text() == "KEYMAP=fr\n"
    assert be.keyboard_layout() == "fr"
    assert note is None or isinstance(note, str)
    with pytest.raises(UserError) as ei:
        be.set_keyboard_layout("xx")
    assert "'xx' is not a known keyboard layout" in ei.value.message
    assert be.keyboard_layout() == "fr"
