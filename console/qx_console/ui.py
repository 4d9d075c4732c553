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
LoadingIndicator ●) are not used, nor Textual's toasts (``ConsoleApp.notify`` writes a notice line), and
text from elsewhere goes through :func:`console_safe`.

Screens and dialogs derive from :class:`ConsoleScreen` / :class:`ConsoleModal` (no inherited Textual
bindings); blocking work runs through :func:`in_thread`, whose results reach a screen only while it is
still shown (:func:`alive`).

Keys typed ahead (a serial line or a slow host delivers a burst at once): Textual's App forwards every
key it has queued to the widget focused at that moment, but a key that is an ordinary binding (Enter,
Tab, Up/Down, Backspace) acts only when it has bubbled back to the App, after the keys behind it. So
every key that moves focus is a *priority* binding here (handled while the App takes it from its
queue, before the next key is forwarded; Screen.focus_next/set_focus are synchronous): Tab/Shift+Tab
(:data:`FOCUS_KEYS`), Up/Down/Left/Right (:data:`FIELD_KEYS`, :data:`DIALOG_KEYS`; a widget that uses
the arrow itself keeps it through ``SkipAction``), and Enter in a :class:`FieldInput`. A field's own
editing keys and its submit are queued behind the characters it has not inserted yet
(:class:`FieldInput`). A screen never moves focus from an ``Input.Submitted`` handler to take the next
key: the field's ``enter`` mode does it. Keys typed behind a key that opens or closes a screen (F2, Enter
on a menu item, Esc) wait until the new top screen has its focus (:class:`KeyOrder`, both apps).
"""

from __future__ import annotations

import inspect
import re
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from rich.cells import cell_len
from rich.text import Text
from textual.actions import SkipAction
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.driver import Driver
from textual.drivers.linux_driver import LinuxDriver
from textual.screen import ModalScreen, Screen
from textual.scrollbar import ScrollBarRender
from textual.message import Message
from textual.widgets import Button, Input, OptionList, RichLog, Static
from textual.worker import Worker, get_current_worker

from qx_common import log
from qx_common.errors import QxError

T = TypeVar("T")
_log = log.get("console.ui")

# The one place the scrollbar glyphs are set: plain cells, the thumb shown by its colour alone.
ScrollBarRender.VERTICAL_BARS = [" "] * 8
ScrollBarRender.HORIZONTAL_BARS = [" "] * 8

ALLOWED_GLYPHS = frozenset("─│┌┐└┘═║╔╗╚╝├┤┬┴┼")

# Text from elsewhere (error messages, systemd and journal lines, qx-update) may carry typographic
# characters the console fonts lack: these get their ASCII look-alike, anything else outside the font '?'.
_ASCII_FOR = {
    "\u2014": "-", "\u2013": "-", "\u2012": "-", "\u2010": "-", "\u2011": "-", "\u2212": "-",
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201c": '"', "\u201d": '"', "\u201e": '"',
    "\u00ab": '"', "\u00bb": '"', "\u2026": "...", "\u2022": "*", "\u25cf": "*", "\u25cb": "o",
    "\u2192": "->", "\u2190": "<-", "\u00a0": " ", "\u00d7": "x", "\u00b0": " deg", "\u2713": "ok",
    "\u2717": "x", "\u00b5": "u", "\u2502": "|",
}


def console_safe(text: str) -> str:
    """``text`` with every character the console fonts lack replaced (ASCII look-alike, else '?').

    Tabs become spaces and other control characters '?', so a journal line cannot move the cursor."""
    out = []
    for c in str(text):
        if c == "\n" or " " <= c <= "~" or c in ALLOWED_GLYPHS:
            out.append(c)
        elif c == "\t":
            out.append("    ")
        else:
            out.append(_ASCII_FOR.get(c, "?"))
    return "".join(out)


# The stylesheet lives in console.tcss (beside this module; installed as package data).
CSS_FILE = Path(__file__).with_name("console.tcss")
CSS = CSS_FILE.read_text()

# Keys every screen of the console understands. Textual's own screen bindings (Ctrl+C copies the
# selection to the terminal's clipboard) are not inherited: see ConsoleScreen. Priority: focus moves
# before the next typed key is forwarded (see the module docstring).
FOCUS_KEYS = [Binding("tab", "focus_step(1)", "Next", show=False, priority=True),
              Binding("shift+tab", "focus_step(-1)", "Previous", show=False, priority=True)]

# Up/Down between fields (Customize screens and forms, every dialog), as on ESXi's DCUI; a list or log
# keeps them (``action_field_step`` skips).
FIELD_KEYS = [Binding("up", "field_step(-1)", "Previous field", show=False, priority=True),
              Binding("down", "field_step(1)", "Next field", show=False, priority=True)]

# A dialog's keys: Up/Down move between its fields, Left/Right between its buttons (in a field they
# move the cursor: ``action_button_step`` skips).
DIALOG_KEYS = FIELD_KEYS + [Binding("left", "button_step(-1)", "Previous button", show=False, priority=True),
                            Binding("right", "button_step(1)", "Next button", show=False, priority=True)]


class _FocusSteps:
    """The focus-moving actions of :class:`ConsoleScreen` and :class:`ConsoleModal` (synchronous)."""

    def action_focus_step(self, delta: int) -> None:
        screen: Any = self  # a Screen: focus_next/focus_previous set the focus at once
        screen.focus_next() if delta > 0 else screen.focus_previous()

    def action_field_step(self, delta: int) -> None:
        if isinstance(getattr(self, "focused", None), (OptionList, RichLog)):
            raise SkipAction()  # the list or log scrolls its own highlight
        self.action_focus_step(delta)


class ConsoleScreen(_FocusSteps, Screen[T], inherit_bindings=False):
    """Base of every full screen of the console: only the bindings the console itself declares."""

    BINDINGS = FOCUS_KEYS


class ConsoleModal(_FocusSteps, ModalScreen[T], inherit_bindings=False):
    """Base of every dialog of the console: only the bindings the console itself declares.

    :meth:`close` dismisses the dialog only while it is the top screen: a result that arrives for a
    dialog the operator already left must not pop whatever screen is on top now."""

    BINDINGS = FOCUS_KEYS + DIALOG_KEYS

    def action_button_step(self, delta: int) -> None:
        """Left/Right on a button: the neighbouring button of its row (elsewhere the key is the widget's)."""
        b = self.focused
        if not isinstance(b, Button) or b.parent is None:
            raise SkipAction()
        row = [w for w in b.parent.children if isinstance(w, Button) and w.focusable]
        i = row.index(b) + delta
        if 0 <= i < len(row):
            self.set_focus(row[i])

    def close(self, result: T | None = None) -> None:
        if self.is_active:
            self.dismiss(result)


class FieldInput(Input):
    """Every text field of the console: its keys act in the order they were typed, however fast.

    ``enter``: what Enter does — ``"submit"`` (``Input.Submitted``, focus stays), ``"next"`` (focus moves
    to the next field; no Submitted), ``"submit+next"`` (both: a filter, then the list it filters),
    ``"auto"`` (next while a later field follows on the screen, else submit: a dialog's fields). The
    focus move happens while the App handles the Enter key itself, so
    the key typed after it already goes to the next field; the submit, like every editing key of
    Textual's Input (Backspace, arrows, Ctrl+U ...), is queued behind the characters this field has not
    inserted yet, so it acts on the text typed before it (not on text typed after it)."""

    class InOrder(Message, bubble=False):
        """An action of this field, run after the keys already forwarded to it."""

        def __init__(self, action: str) -> None:
            super().__init__()
            self.action = action

    # Textual's Input bindings, as priority bindings that queue their action in order (Enter apart).
    BINDINGS = [Binding("enter", "enter", "Enter", show=False, priority=True)] + [
        Binding(b.key, f"in_order({b.action!r})", b.description, show=False, priority=True)
        for b in Binding.make_bindings(Input.BINDINGS) if b.key != "enter"]

    # What may be typed or pasted (refused whole otherwise, with the terminal's bell): every value of a
    # form is printable ASCII by the schema, and anything else (a pasted ESC sequence, non-ASCII, a
    # zero-width space) would be drawn as typed, outside the console font or as a terminal control.
    # The length bounds a paste (a 1 MB paste made every later key take half a second).
    RESTRICT = r"[ -~]*"
    MAX_LENGTH = 2048

    def __init__(self, *args: Any, enter: str = "submit", **kwargs: Any) -> None:
        kwargs.setdefault("restrict", self.RESTRICT)
        kwargs.setdefault("max_length", self.MAX_LENGTH)
        super().__init__(*args, **kwargs)
        if enter not in ("submit", "next", "submit+next", "auto"):
            raise ValueError(f"FieldInput enter={enter!r}: use 'submit', 'next', 'submit+next' or 'auto'")
        self.enter = enter

    def action_in_order(self, action: str) -> None:
        self.post_message(self.InOrder(action))

    async def on_field_input_in_order(self, message: InOrder) -> None:
        message.stop()
        await self.run_action(message.action)

    def action_enter(self) -> None:
        mode = self.enter
        if mode == "auto":
            chain = self.screen.focus_chain
            later = chain[chain.index(self) + 1:] if self in chain else []
            mode = "next" if any(isinstance(w, Input) for w in later) else "submit"
        if mode in ("next", "submit+next"):
            self.screen.focus_next()
        if mode in ("submit", "submit+next"):
            self.action_in_order("submit")


class KeyOrder:
    """Mixin of both apps (before ``App`` in the bases): keys typed ahead of a screen change reach the
    screen they were typed for.

    Textual's App forwards each queued key to the widget focused at that moment, but a key that opens
    or closes a screen (F2, Enter on a menu item, Esc) acts only when it has bubbled back to the App, and
    a pushed screen mounts and takes its focus some message cycles later: the keys behind it went to the
    old screen. So the App takes keys one transition at a time:

    * A key that is not a printable character typed into a text field may change the screen: while it
      travels, the keys behind it are held. It is followed up the DOM from the widget it went to, twice
      (:meth:`MessagePump.call_later` on each node in turn, so the follower arrives behind the key and
      behind whatever the key's action posted and bubbled: ``OptionList.OptionSelected``).
    * Every screen change (``App.screen_change_signal``: push, pop, dismiss, switch) holds the keys
      until the new top screen is mounted and has its focus (or has nothing to focus).
    * An action that opens a screen only after a worker (F2 reads the lockdown mode first) calls
      :meth:`hold_keys` and, when it decides not to, :meth:`release_keys`.

    Held keys are replayed in order, each through the same rule. A hold ends after
    :attr:`KEY_HOLD_LIMIT_S` at the latest (a key is never held for ever); priority bindings (focus
    moves) act in order like every other key."""

    KEY_HOLD_LIMIT_S = 5.0
    # A mounted screen that has focusable widgets but focuses none by itself gets the keys after this
    # many refreshes (a screen focusing from on_mount or call_after_refresh has done so by then).
    FOCUS_REFRESHES = 5

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.held_keys: list[events.Key] = []
        self.key_hold = 0  # the current hold's number; 0: keys pass
        self._hold_count = 0
        self._escape_releases = 0  # the hold an Esc ends (hold_keys(escape_releases=True)); 0: none

    def on_mount(self) -> None:
        app: Any = self
        app.screen_change_signal.subscribe(app, self._screen_changed, immediate=True)

    def hold_keys(self, *, escape_releases: bool = False) -> int:
        """Hold every key from now on until :meth:`release_keys` (or the time limit); returns the hold.
        ``escape_releases``: an Esc typed meanwhile ends the hold at once (the keys held before it, then
        the Esc, go to the screen as usual) — a dialog waiting for a worker stays cancellable."""
        app: Any = self
        self._hold_count += 1
        self.key_hold = hold = self._hold_count
        self._escape_releases = hold if escape_releases else 0
        app.set_timer(self.KEY_HOLD_LIMIT_S, lambda: self.release_keys(hold))
        return hold

    def release_keys(self, hold: int | None = None) -> None:
        """End the hold (``hold``: only if that one is still the current hold) and replay held keys."""
        if self.key_hold and (hold is None or hold == self.key_hold):
            self.key_hold = 0
            app: Any = self
            app.call_later(self._replay_keys)

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.Key) and not event.is_forwarded:
            if self.key_hold or self.held_keys:
                self.held_keys.append(event)
                if event.key == "escape" and self.key_hold and self.key_hold == self._escape_releases:
                    self.release_keys(self.key_hold)
            else:
                await self._route_key(event)
            return
        await super().on_event(event)  # type: ignore[misc]

    async def _replay_keys(self) -> None:
        while self.held_keys and not self.key_hold:
            await self._route_key(self.held_keys.pop(0))

    async def _route_key(self, event: events.Key) -> None:
        app: Any = self
        target = app.focused or app.screen
        if isinstance(target, Input) and event.is_printable:
            await super().on_event(event)  # type: ignore[misc]  # a character for a field
            return
        hold = self.hold_keys()
        await super().on_event(event)  # type: ignore[misc]
        chain = [n for n in target.ancestors_with_self if n is not app] + [app]
        self._follow(chain * 2, hold)

    def _follow(self, chain: list[Any], hold: int) -> None:
        if hold != self.key_hold:
            return  # a screen change (or an action) took over the hold
        if not chain:
            self.release_keys(hold)
        elif not chain[0].call_later(self._follow, chain[1:], hold):
            self.release_keys(hold)  # that node is gone: nothing more will come from it

    def _screen_changed(self, screen: Any) -> None:
        self._settle(screen, self.hold_keys(), 0)

    def _settle(self, screen: Any, hold: int, refreshes: int) -> None:
        app: Any = self
        if hold != self.key_hold:
            return
        if screen is not app.screen:
            self.release_keys(hold)  # replaced meanwhile without a signal of its own: nothing to wait for
        elif screen.is_mounted and (screen.focused is not None or not screen.focus_chain
                                    or refreshes >= self.FOCUS_REFRESHES):
            self.release_keys(hold)
        else:
            app.call_after_refresh(self._settle, screen, hold, refreshes + 1 if screen.is_mounted else 0)


class SecretInput(FieldInput):
    """A password field that masks with '*' (Textual's bullet is not in the console fonts).

    Any character but a control character or a lone surrogate may be typed (a password is hashed as
    UTF-8; the mask shows none of it)."""

    RESTRICT = r"[^\x00-\x1f\x7f-\x9f\ud800-\udfff]*"
    MAX_LENGTH = 1024

    @property
    def _value(self) -> Text:
        return Text("*" * len(self.value), no_wrap=True, overflow="ignore", end="")


# What the console writes to its terminal: ASCII (escape sequences included) and the box glyphs.
_OUTSIDE_FONT = re.compile("[^\x00-\x7f" + "".join(sorted(ALLOWED_GLYPHS)) + "]")
# One cell for one cell (the layout must not move): a look-alike, else '?' per cell.
_CELL_FOR = {"\u2026": ".", "\u2014": "-", "\u2013": "-", "\u2018": "'", "\u2019": "'", "\u201c": '"',
             "\u201d": '"', "\u2022": "*", "\u25cf": "*", "\u25bc": "v", "\u25b2": "^", "\u2192": ">",
             "\u2190": "<", "\u00a0": " "}


def terminal_safe(data: str) -> str:
    """``data`` (a chunk of terminal output) with every character outside the console font replaced,
    cell for cell. The last line of defence of the glyph rule, for what Textual draws by itself where
    nothing else can reach it (the ellipsis of a border title cut at a narrow width); a lone surrogate
    (which would stop the writer thread with an encoding error) becomes '?'."""

    def one(m: re.Match[str]) -> str:
        c = m.group()
        if c in _CELL_FOR:
            return _CELL_FOR[c]
        try:
            return "?" * cell_len(c)
        except Exception:  # noqa: BLE001 - a character rich cannot measure: one cell
            return "?"

    return _OUTSIDE_FONT.sub(one, data)


class ConsoleDriver(LinuxDriver):
    """Textual's Linux terminal driver, whose keyboard survives input that is not UTF-8 and whose
    output keeps to the console font.

    A serial line delivers noise (a wrong line speed, a terminal sending Latin-1, a KVM switch):
    Textual's input thread decodes strictly, and one invalid byte ended it with a panic that quit the
    console. Here the input thread starts again after such a read (that read's keys are dropped and
    logged; the terminal's state is untouched). Output goes through :func:`terminal_safe`. Both apps
    run on it (``get_driver_class``)."""

    def write(self, data: str) -> None:
        super().write(terminal_safe(data))

    def run_input_thread(self) -> None:
        while True:
            try:
                super().run_input_thread()
                return
            except UnicodeDecodeError as e:
                _log.warning("terminal input that is not UTF-8 dropped (%s): reading on", e)


def console_driver_class(app_driver: type[Driver]) -> type[Driver]:
    """The driver for an app: :class:`ConsoleDriver` where Textual would use its Linux driver."""
    return ConsoleDriver if app_driver is LinuxDriver else app_driver


class KeyBar(Static):
    """The bottom line naming the keys of the current screen (instead of Textual's Footer)."""


_KEY_NAMES = {"escape": "Esc", "slash": "/", "enter": "Enter", "tab": "Tab", "up": "Up", "down": "Down",
              "pageup": "PgUp", "pagedown": "PgDn", "home": "Home", "end": "End", "space": "Space"}


def key_label(key: str) -> str:
    """A binding's key as the key bar names it: ``escape`` -> ``Esc``, ``f10`` -> ``F10``,
    ``ctrl+r`` -> ``Ctrl+R`` (the first of several keys bound together)."""
    k = key.split(",")[0].strip()
    if k.startswith("ctrl+"):
        return "Ctrl+" + key_label(k[5:])
    if k in _KEY_NAMES:
        return _KEY_NAMES[k]
    return k.upper() if len(k) == 1 or (k[0] == "f" and k[1:].isdigit()) else k.capitalize()


def keys_text(hints: str, bindings: Any) -> str:
    """The key bar of a screen: ``hints`` (keys its widgets handle: Tab, Enter, Up/Down) and then every
    shown binding of ``bindings`` (``BINDINGS``) in its order, so a key bar cannot name a key the
    screen does not have."""
    parts = [hints] if hints else []
    parts += [f"{key_label(b.key)} {b.description}" for b in Binding.make_bindings(bindings)
              if b.show and b.description]
    return "   ".join(parts)


def describe_error(e: BaseException) -> str:
    if isinstance(e, QxError):
        text = e.message + (f"\nHint: {e.hint}" if e.hint else "")
    else:
        text = f"{type(e).__name__}: {e}"
    return console_safe(text)


class ErrorScreen(ConsoleModal[None]):
    """Shown for any exception; the console keeps running underneath."""

    BINDINGS = [("escape", "close", "Close"), ("enter", "close", "Close")]

    def __init__(self, title: str, error: BaseException) -> None:
        super().__init__()
        self._title = title
        self._error = error

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-error") as v:
            v.border_title = console_safe(self._title)
            yield Static(describe_error(self._error), classes="error", markup=False)
            if not isinstance(self._error, QxError):
                tb = "".join(traceback.format_exception(self._error)[-3:])
                yield Static(console_safe(tb.strip()[-600:]), classes="hint", markup=False)
            yield Button("Close", id="close")

    def on_mount(self) -> None:
        self.query_one("#close", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.close(None)

    def action_close(self) -> None:
        self.close(None)


def alive(node: Any) -> bool:
    """Is ``node`` (the app, a screen, or a widget on one) still where the operator can see it?

    A screen is alive while it is on the screen stack (covered by a dialog counts); a widget while it
    is attached to a live screen. A dismissed screen, or a widget removed from its screen, is not."""
    app = node.app
    if node is app:
        return app.is_running
    screen = node if isinstance(node, Screen) else getattr(node, "screen", None)
    try:
        if screen is None or screen not in app.screen_stack:
            return False
    except Exception:  # noqa: BLE001 - no screen stack: the app is shutting down
        return False
    return node is screen or node.is_attached


def in_thread(
    widget: Any,
    fn: Callable[[], T],
    done: Callable[[T], Any],
    fail: Callable[[BaseException], Any] | None = None,
    *,
    group: str = "default",
    exclusive: bool = False,
    what: str = "",
) -> None:
    """Run blocking ``fn`` in a thread worker; ``done(result)`` (may be async) or ``fail(error)`` run on
    the UI thread.

    Invariants (a real host is slow; the operator may leave a screen while its call still runs):

    * ``done``/``fail`` run only if ``widget`` is still :func:`alive` and the worker was not superseded
      (``exclusive``) or cancelled when that screen went away; otherwise the result is dropped (logged).
      The blocking call itself is not interrupted: what it changes on the host is done either way.
    * A failure nobody handles (no ``fail``, or ``widget`` gone) never reaches Textual: on a live
      screen it opens the error panel; for a screen already left it becomes the one-line notice
      (``what`` names the operation), so a change that failed is never silently lost.
    * An error raised by ``done`` or ``fail`` themselves opens the error panel (a worker would
      otherwise drop it silently).
    """
    app = widget.app

    def job() -> None:
        worker = get_current_worker()
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 - shown to the operator, never fatal
            _deliver(app, widget, worker, fail, e, what, failed=True)
            return
        _deliver(app, widget, worker, done, result, what, failed=False)

    widget.run_worker(job, thread=True, group=group, exclusive=exclusive, exit_on_error=False)


def _deliver(app: Any, widget: Any, worker: Worker[Any], callback: Callable[[Any], Any] | None, arg: Any,
             what: str, *, failed: bool) -> None:
    """From the worker thread: run ``callback(arg)`` on the UI thread if ``widget`` still wants it."""

    async def on_ui() -> None:
        # Decided on the UI thread: a screen cannot be dismissed between this check and the callback.
        if not alive(widget):
            if failed:
                _log.warning("%s failed after its screen was left: %r", what or "background call", arg, exc_info=arg)
                if what and alive(app):
                    app.notice(f"{what} failed: {describe_error(arg).splitlines()[0]}")
            else:
                _log.info("result of %s dropped: its screen was left", what or "a background call")
            return
        if worker.is_cancelled:  # superseded by a newer call of its exclusive group: that one reports
            _log.debug("result of %s dropped: superseded", what or "a background call")
            return
        if callback is None:
            app.show_error(f"{what or 'Operation'} failed", arg)
            return
        try:
            res = callback(arg)
            if inspect.isawaitable(res):
                await res
        except Exception as e:  # noqa: BLE001 - a bug of the screen: shown, the console keeps running
            app.show_error("Internal error (the console keeps running)", e)

    try:
        app.call_from_thread(on_ui)
    except RuntimeError as e:  # the app has stopped (shutdown): nobody is there to show it to
        _log.info("result of %s dropped: %s", what or "a background call", e)


def from_thread(widget: Any, fn: Callable[..., Any], *args: Any) -> None:
    """From a worker thread: run ``fn(*args)`` on the UI thread if ``widget`` is still :func:`alive`
    (progress lines, steps). Never raises into the worker: a screen that is gone must not abort the
    host operation that reports to it."""
    try:
        app = widget.app
    except Exception:  # noqa: BLE001 - NoActiveAppError: the app has ended, nobody to show it to
        return

    def on_ui() -> None:
        if alive(widget):
            try:
                fn(*args)
            except Exception as e:  # noqa: BLE001 - a bug of the screen
                app.show_error("Internal error (the console keeps running)", e)

    try:
        app.call_from_thread(on_ui)
    except Exception as e:  # noqa: BLE001 - app stopping: a progress line is not worth failing for
        _log.info("progress not shown: %s", e)


def text_bar(fraction: float, width: int = 40) -> str:
    n = max(0, min(width, round(fraction * width)))
    return "[" + "#" * n + "." * (width - n) + f"] {fraction * 100:3.0f} %"
