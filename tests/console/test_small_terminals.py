"""Small terminals (60x20, and the serial console's 80x24): nothing is cut off without a way to reach it.

Every screen's key bar is shown whole (it wraps rather than cuts), every field and button can be reached
with Tab and is then on screen, the status panel scrolls, and the network form scrolls to the first
field with an error; Apply (F10) is always reachable.
"""

from __future__ import annotations

import pytest
from textual.widget import Widget

from qx_console.app import ConsoleApp
from qx_console.customize import CustomizeScreen, PowerScreen
from qx_console.memory import MemoryBackend
from qx_console.status import StatusScreen

from .helpers import bad_glyphs, frame_text, on_screen, until
from .test_app import fill_network, login, open_item, open_network_form

pytestmark = pytest.mark.anyio
SIZES = [(60, 20), (80, 24)]
ITEMS = ("network", "test", "password", "ssh", "lockdown", "keyboard", "nodeapi", "logs", "services", "updates",
         "reset", "support")


def squeezed(text: str) -> str:
    return "".join(text.split())


def visible(app: ConsoleApp, w: Widget) -> bool:
    """Is ``w`` drawn where it is (not clipped by a container or the terminal's edge)?"""
    r = w.region
    if not r.area:
        return False
    for x, y in ((r.x, r.y), (r.right - 1, r.y)):
        if not (0 <= x < app.size.width and 0 <= y < app.size.height):
            return False
        hit, _ = app.screen.get_widget_at(x, y)
        if hit is not w and w not in hit.ancestors:
            return False
    return True


async def every_focusable_reachable(pilot, app: ConsoleApp) -> None:
    """Tab through the screen: each widget that takes the focus is then on screen (scrolled into view)."""
    seen: list[Widget] = []
    for _ in range(40):
        await pilot.press("tab")
        await pilot.pause()
        w = app.focused
        if w is None or w in seen:
            break
        seen.append(w)
        await until(pilot, lambda: visible(app, w))
    assert seen, "nothing on this screen takes the focus"


def keybar_whole(app: ConsoleApp) -> None:
    keys = getattr(app.screen, "KEYS", None)
    if keys:
        assert squeezed(keys) in squeezed(frame_text(app)), keys


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
async def test_every_screen_fits_or_scrolls(size: tuple[int, int]) -> None:
    be = MemoryBackend()
    app = ConsoleApp(be, refresh_s=3600)
    fp = be.s.node_cert.fingerprint_lines()
    async with app.run_test(size=size) as pilot:
        await until(pilot, lambda: isinstance(app.screen, StatusScreen) and on_screen(app, "10.0.2.15"))
        assert squeezed("F2 Customize system   F12 Shut down/Restart   Ctrl+R Refresh") in squeezed(frame_text(app))
        await pilot.press("end")  # the status panel scrolls: its last line can be brought into view
        await until(pilot, lambda: fp[-1] in frame_text(app))
        assert not bad_glyphs(app)
        await login(pilot, app)
        keybar_whole(app)
        for item in ITEMS:
            await open_item(pilot, app, item)
            await until(pilot, lambda: not isinstance(app.screen, CustomizeScreen))
            scr = app.screen
            await until(pilot, lambda: not scr.query("#loading"))
            await pilot.pause()
            keybar_whole(app)
            await every_focusable_reachable(pilot, app)
            assert not bad_glyphs(app), item
            await pilot.press("escape")
            await until(pilot, lambda: isinstance(app.screen, CustomizeScreen))
        await pilot.press("f12")
        await until(pilot, lambda: isinstance(app.screen, PowerScreen))
        await every_focusable_reachable(pilot, app)


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
async def test_network_form_scrolls_to_the_first_error_and_applies_from_anywhere(size: tuple[int, int]) -> None:
    be = MemoryBackend()
    app = ConsoleApp(be, refresh_s=3600)
    async with app.run_test(size=size) as pilot:
        await login(pilot, app)
        await open_network_form(pilot, app)
        scr = await fill_network(pilot, app, hostname="bad_name", vlan="0")
        scr.query_one("#nic").focus()
        await pilot.press("f10")
        await until(pilot, lambda: on_screen(app, "Nothing was written"))
        err = scr.query_one("#err-hostname")
        await until(pilot, lambda: visible(app, err) and "hostname: contains illegal" in frame_text(app))
        assert app.focused is scr.query_one("#hostname")
        # corrected, F10 from the field at the bottom applies: Apply is never out of reach
        scr.query_one("#hostname").value = "host1"
        scr.query_one("#vlan").value = ""
        await pilot.press("f10")
        await until(pilot, lambda: on_screen(app, "Press K to keep"))
        await pilot.press("k")
        await until(pilot, lambda: on_screen(app, "new configuration kept"))
    assert be.s.config.hostname == "host1"
