"""Test helpers: text of the current frame, glyph check, waiting for a condition."""

from __future__ import annotations

import html
import re
from collections.abc import Callable

from textual.app import App
from textual.pilot import Pilot

from qx_console.ui import ALLOWED_GLYPHS


def frame_text(app: App) -> str:
    """The characters on screen (from the SVG screenshot Textual makes of the current frame)."""
    svg = app.export_screenshot()
    parts = re.findall(r"<text[^>]*>(.*?)</text>", svg, flags=re.S)
    return html.unescape("".join(parts)).replace("\xa0", " ")


def bad_glyphs(app: App) -> set[str]:
    return {c for c in frame_text(app) if ord(c) > 126 and c not in ALLOWED_GLYPHS}


async def until(pilot: Pilot, cond: Callable[[], bool], timeout: float = 10.0, raw: bool = False) -> None:
    """Let the app run until ``cond()`` holds (workers are threads: poll with a deadline).

    ``raw``: sleep instead of ``pilot.pause`` (which waits on every widget of the screen — useless
    once a widget's message loop has stopped after an exception)."""
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached; screen:\n" + frame_text(pilot.app))
        await (asyncio.sleep(0.05) if raw else pilot.pause(0.05))


def on_screen(app: App, text: str) -> bool:
    return text in frame_text(app)


async def push(pilot: Pilot, selector: str) -> None:
    """Focus a button and press Enter, as an operator at the keyboard does."""
    await until(pilot, lambda: bool(pilot.app.screen.query(selector)))
    w = pilot.app.screen.query_one(selector)
    await until(pilot, lambda: not w.has_class("-active"))  # a button ignores presses for 0.2 s after one
    w.focus()
    await pilot.pause()
    await pilot.press("enter")
