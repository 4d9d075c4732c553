"""Shared UI pieces: the glyph-safe theme, the key bar, the error panel and the worker helper.

Rendering rules for a real Linux VGA console (TERM=linux, 16 colours, the standard console fonts):
only ASCII and the box glyphs ``─│┌┐└┘═║╔╗╚╝├┤┬┴┼`` may appear. Textual's defaults break this in
four places, each fixed here: borders (``tall``/``wide`` use ▊▎▁▔ — every widget gets ``solid``/
``double`` or none), the header icon ⭘ (we draw our own title bar), the command palette (off) and the
scrollbar ends (▁▂▃ / ▉▊▋ — replaced by plain cells). Progress bars are drawn as ``[####....]``.
The Linux console has no bright backgrounds (yellow shows as brown) and draws bold as a bright
foreground, so bold black text is dark grey: black text is never bold here (``qx_console.screenshot``
renders a frame the way the console does; the snapshot tests use it).
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
Input:disabled { background: black; color: white; opacity: 1; }
Button { border: none; height: 1; min-width: 10; background: white; color: black; margin: 0 1 0 0;
         padding: 0 1; text-style: none; }
Button:focus { background: cyan; color: black; text-style: none; }
Button:hover { border: none; }
Button.-active { border: none; }
OptionList { border: solid white; background: black; height: auto; max-height: 14; padding: 0; }
OptionList:focus { border: double yellow; }
OptionList > .option-list--option-highlighted { background: white; color: black; text-style: none; }
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
    done: Callable[[T], Any],
    fail: Callable[[BaseException], None] | None = None,
    *,
    group: str = "default",
    exclusive: bool = False,
) -> None:
    """Run blocking ``fn`` in a thread worker; ``done(result)`` (may be async) or ``fail(error)`` run on
    the UI thread.

    Errors never escape into Textual (which would stop the app): without ``fail`` they open the error panel,
    and so does an error of ``done`` or ``fail`` themselves (a worker would otherwise drop it silently).
    """
    app = widget.app

    def job() -> None:
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 - shown to the operator, never fatal
            if fail is not None:
                _on_ui(app, fail, e)
            else:
                app.call_from_thread(app.show_error, "Operation failed", e)
            return
        _on_ui(app, done, result)

    widget.run_worker(job, thread=True, group=group, exclusive=exclusive, exit_on_error=False)


def _on_ui(app: Any, callback: Callable[[Any], Any], arg: Any) -> None:
    try:
        app.call_from_thread(callback, arg)
    except Exception as e:  # noqa: BLE001 - a bug of the screen: shown, the console keeps running
        app.call_from_thread(app.show_error, "Internal error (the console keeps running)", e)


def text_bar(fraction: float, width: int = 40) -> str:
    n = max(0, min(width, round(fraction * width)))
    return "[" + "#" * n + "." * (width - n) + f"] {fraction * 100:3.0f} %"
