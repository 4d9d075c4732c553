"""Screenshots as a Linux console shows the frame (TERM=linux, 16 colours): the SVG snapshots of the tests.

Textual composes every frame in 24-bit colour and exports screenshots that way. On a 16-colour terminal
its driver first downgrades each colour to the nearest of the 16 standard colours (Rich's
``Color.downgrade``: the same step is done here), and the Linux console then draws those by its own
rules (console_codes(4), the kernel's vt.c):

* SGR 90-97 (bright foreground) are bold + 30-37: bold means a bright foreground, not a heavier font;
* SGR 100-107 (bright background) are the same as 40-47 ("bright not supported");
* reverse swaps the colours; the brightness stays with the foreground;
* the colours are the kernel's default palette (``default_red/grn/blu`` in vt.c), white text is
  light grey (7) unless bright (15).

Half-bright (dim) shows as dark grey; italic is not drawn. So every colour in the exported SVG is one
of :data:`LINUX_PALETTE` (Rich's window decoration dots are left out), and a bright background that a
console cannot show does not appear either.
"""

from __future__ import annotations

import io
import re

from rich.color import Color, ColorSystem, ColorType
from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.segment import Segment
from rich.style import Style
from rich.terminal_theme import TerminalTheme
from textual.app import App

# The Linux console's default palette, in ANSI order (black, red, green, brown, blue, magenta, cyan,
# light grey, then the bright versions).
LINUX_PALETTE: tuple[tuple[int, int, int], ...] = (
    (0x00, 0x00, 0x00), (0xAA, 0x00, 0x00), (0x00, 0xAA, 0x00), (0xAA, 0x55, 0x00),
    (0x00, 0x00, 0xAA), (0xAA, 0x00, 0xAA), (0x00, 0xAA, 0xAA), (0xAA, 0xAA, 0xAA),
    (0x55, 0x55, 0x55), (0xFF, 0x55, 0x55), (0x55, 0xFF, 0x55), (0xFF, 0xFF, 0x55),
    (0x55, 0x55, 0xFF), (0xFF, 0x55, 0xFF), (0x55, 0xFF, 0xFF), (0xFF, 0xFF, 0xFF),
)
LINUX_THEME = TerminalTheme(LINUX_PALETTE[0], LINUX_PALETTE[7], list(LINUX_PALETTE[:8]), list(LINUX_PALETTE[8:]))

DEFAULT_FG, DEFAULT_BG, HALF_BRIGHT = 7, 0, 8


def _index(color: Color | None, default: int) -> int:
    if color is None:
        return default
    c = color.downgrade(ColorSystem.STANDARD)
    return default if c.type == ColorType.DEFAULT or c.number is None else c.number


def linux_style(style: Style | None) -> Style:
    """The style a Linux console gives a cell that Textual styled ``style`` (as explicit palette colours)."""
    style = style or Style()
    fg, bg = _index(style.color, DEFAULT_FG), _index(style.bgcolor, DEFAULT_BG)
    bright = fg >= 8 or bool(style.bold)
    fg, bg = fg & 7, bg & 7
    if style.reverse:
        fg, bg = bg, fg
    if style.dim and not bright:
        fg, bright = HALF_BRIGHT, False
    return Style(color=Color.from_ansi(fg | (8 if bright else 0)), bgcolor=Color.from_ansi(bg),
                 underline=bool(style.underline))


class _OnLinuxConsole:
    """Renders ``renderable`` with every style replaced by :func:`linux_style`."""

    def __init__(self, renderable: RenderableType) -> None:
        self.renderable = renderable

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        for seg in console.render(self.renderable, options):
            yield seg if seg.control else Segment(seg.text, linux_style(seg.style))


def linux_console_svg(app: App, *, title: str | None = None) -> str:
    """An SVG of the app's current frame in the Linux console's 16 colours (see the module doc)."""
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True,
                      color_system="standard", record=True, legacy_windows=False, safe_box=False)
    # What App.export_screenshot renders (Textual's own code reaches into the compositor the same way).
    frame = app.screen._compositor.render_update(full=True, screen_stack=app._background_screens)
    console.print(_OnLinuxConsole(frame))
    svg = console.export_svg(title=title or app.title, theme=LINUX_THEME)
    # Rich's window decoration has three coloured "traffic light" dots; a console has none.
    return re.sub(r'\s*<g transform="translate\(26,22\)">\s*(?:<circle [^>]*/>\s*)+</g>', "", svg)
