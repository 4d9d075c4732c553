"""Shared UI pieces: the glyph-safe theme, the key bar, the error panel and the worker helper.

Rendering rules for a real Linux VGA console (TERM=linux, 16 colours, the standard console fonts):
only ASCII and the box glyphs ``─│┌┐└┘═║╔╗╚╝├┤┬┴┼`` may appear. Textual's defaults break this in
four places, each fixed here: borders (``tall``/``wide`` use ▊▎▁▔ — every widget gets ``solid``/
``double`` or none), the header icon ⭘ (we draw our own title bar), the command palette (off) and the
scrollbar ends (▁▂▃ / ▉▊▋ — replaced by plain cells). Progress bars are drawn as ``[####....]``.
Widgets that draw their own non-font glyphs (Select ▼, Checkbox/RadioButton ▐●▌, ProgressBar ━,
LoadingIndicator ●) are not used.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any, TypeVar

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.scrollbar import ScrollBarRender
from rich.text import Text
from textual.widgets import Button, Input, Static

from qx_common.errors import QxError

T = TypeVar("T")

# The one place the scrollbar glyphs are set: plain cells, the thumb shown by its colour alone.
ScrollBarRender.VERTICAL_BARS = [" "] * 8
ScrollBarRender.HORIZONTAL_BARS = [" "] * 8

ALLOWED_GLYPHS = frozenset("─│┌┐└┘═║╔╗╚╝├┤┬┴┼")

CSS = """
Screen { background: black; color: white; }
* { scrollbar-size: 1 1; scrollbar-background: black; scrollbar-color: blue; scrollbar-color-hover: blue;
    scrollbar-color-active: cyan; scrollbar-corner-color: black; }
#titlebar { dock: top; height: 1; background: blue; color: white; text-style: bold; padding: 0 1; }
KeyBar { dock: bottom; height: 1; background: white; color: black; padding: 0 1; }
.panel { border: double white; border-title-color: yellow; border-title-style: bold; padding: 0 1;
         height: auto; }
.form-row { height: 1; margin: 0; }
.label { width: 22; color: white; }
.source { color: cyan; width: auto; }
.error { color: red; text-style: bold; height: auto; }
.ok { color: green; }
.hint { color: yellow; height: auto; }
Input { border: none; height: 1; background: blue; color: white; padding: 0 1; width: 1fr; }
Input:focus { background: cyan; color: black; border: none; }
Input.-invalid { border: none; background: red; }
Button { border: none; height: 1; min-width: 10; background: white; color: black; margin: 0 1 0 0;
         padding: 0 1; text-style: bold; }
Button:focus { background: yellow; color: black; text-style: bold reverse; }
Button:hover { border: none; }
Button.-active { border: none; }
OptionList { border: solid white; background: black; height: auto; max-height: 14; padding: 0; }
OptionList:focus { border: double yellow; }
OptionList > .option-list--option-highlighted { background: yellow; color: black; text-style: bold; }
RichLog { border: solid white; background: black; }
ModalScreen { align: center middle; background: black 60%; }
.dialog { width: 70; height: auto; max-height: 20; border: double yellow; background: black; padding: 0 1; }
.dialog-error { width: 76; height: auto; max-height: 22; border: double red; background: black; padding: 0 1; }
.buttons { height: 1; margin-top: 1; }
"""


class SecretInput(Input):
    """A password field that masks with '*' (Textual's bullet is not in the console fonts)."""

    @property
    def _value(self) -> Text:
        return Text("*" * len(self.value), no_wrap=True, overflow="ignore", end="")


class KeyBar(Static):
    """The bottom line naming the keys of the current screen (instead of Textual's Footer)."""


def describe_error(e: BaseException) -> str:
    if isinstance(e, QxError):
        return e.message + (f"\nHint: {e.hint}" if e.hint else "")
    return f"{type(e).__name__}: {e}"


class ErrorScreen(ModalScreen[None]):
    """Shown for any exception; the console keeps running underneath."""

    BINDINGS = [("escape", "dismiss", "Close"), ("enter", "dismiss", "Close")]

    def __init__(self, title: str, error: BaseException) -> None:
        super().__init__()
        self._title = title
        self._error = error

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-error") as v:
            v.border_title = self._title
            yield Static(describe_error(self._error), classes="error")
            if not isinstance(self._error, QxError):
                tb = "".join(traceback.format_exception(self._error)[-3:])
                yield Static(tb.strip()[-600:], classes="hint", markup=False)
            yield Button("Close", id="close")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None)

    async def action_dismiss(self, result: Any = None) -> None:
        self.dismiss(None)


def in_thread(
    widget: Any,
    fn: Callable[[], T],
    done: Callable[[T], None],
    fail: Callable[[BaseException], None] | None = None,
    *,
    group: str = "default",
    exclusive: bool = False,
) -> None:
    """Run blocking ``fn`` in a thread worker; ``done(result)`` or ``fail(error)`` run on the UI thread.

    Errors never escape into Textual (which would stop the app): without ``fail`` they open the error panel.
    """
    app = widget.app

    def job() -> None:
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 - shown to the operator, never fatal
            if fail is not None:
                app.call_from_thread(fail, e)
            else:
                app.call_from_thread(app.show_error, "Operation failed", e)
            return
        app.call_from_thread(done, result)

    widget.run_worker(job, thread=True, group=group, exclusive=exclusive, exit_on_error=False)


def text_bar(fraction: float, width: int = 40) -> str:
    n = max(0, min(width, round(fraction * width)))
    return "[" + "#" * n + "." * (width - n) + f"] {fraction * 100:3.0f} %"
