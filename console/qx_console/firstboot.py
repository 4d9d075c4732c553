"""First boot of a raw image: root has no password yet, so the console asks for one before anything else.

A host booted from the raw disk image (no installer ran) has root's password locked in ``/etc/shadow``
(``!``/``*``, or empty). F2 and F12 need that password, so without this the console would be a dead end.
:func:`ask_if_locked` is called by :meth:`qx_console.app.ConsoleApp.on_mount` right after the status
screen is pushed; when the password is locked it covers it with :class:`FirstBootPasswordScreen`, which
cannot be left (no Esc, F2/F12 do nothing) until a password is set — same policy as the console's
"Root password" screen (:func:`qx_console.shadow.check_new_password`).

"Once": the screen appears only while the password is locked, so after it was set it never returns. The
console runs on tty1 and on the serial line at the same time: the first one to set the password wins;
the other notices (it re-checks every few seconds and right before writing) and steps aside rather than
overwrite the password just set.

Only backends with a shadow file (``shadow_file``, i.e. :class:`qx_console.linux.LinuxBackend`) can be
locked; the in-memory backend has a fixed password.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.markup import escape
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Static

from qx_common import log
from qx_common.errors import UserError
from qx_console import shadow
from qx_console.network_screens import _row
from qx_console.ui import ConsoleScreen, KeyBar, KeyOrder, console_safe, describe_error, in_thread

_log = log.get("console.firstboot")

RECHECK_S = 3.0  # how often the screen looks whether the other console has set the password meanwhile


def password_locked(shadow_file: Path, user: str = "root") -> bool:
    """Is ``user``'s password field in ``shadow_file`` empty or locked (starts with ``!`` or ``*``)?

    A missing file or user is not "locked" (nothing could be set there either: the console does not ask).
    """
    try:
        lines = shadow_file.read_text().splitlines()
    except OSError as e:
        _log.warning("cannot read %s: %s", shadow_file, e)
        return False
    for line in lines:
        parts = line.split(":")
        if parts[0] == user and len(parts) > 1:
            return not parts[1] or parts[1][0] in "!*"
    return False


def needs_root_password(backend: Any) -> bool:
    shadow_file = getattr(backend, "shadow_file", None)
    return isinstance(shadow_file, Path) and password_locked(shadow_file)


def ask_if_locked(app: Any) -> bool:
    """Push :class:`FirstBootPasswordScreen` over the current screen if root's password is locked.

    Synchronous on purpose: it must be on screen before the first key is handled (F2/F12 would otherwise
    race it), and reading a few hundred bytes of a local file does not block the UI noticeably."""
    if needs_root_password(app.backend):
        app.push_screen(FirstBootPasswordScreen())
        return True
    return False


class FirstBootPasswordScreen(ConsoleScreen[None]):
    """Set the root password (twice); dismissed only when it is set (here, or on the other console).
    Only the console's own keys (:class:`~qx_console.ui.ConsoleScreen`: Tab/Shift+Tab) and these."""

    BINDINGS = [("escape", "blocked", ""), ("f2", "blocked", ""), ("f12", "blocked", ""),
                ("f10", "apply", "Set password")]
    KEYS = "Tab Next  Enter Continue  F10 Set password"

    def __init__(self) -> None:
        super().__init__()
        self.busy = False
        self._key_hold: int | None = None  # ui.KeyOrder's hold while the password is set

    def compose(self) -> ComposeResult:
        yield Static("Quantix OS - First boot: set the root password", id="titlebar")
        with Vertical(classes="panel") as v:
            v.border_title = "Root password"
            yield Static("This host has no root password yet. Set one now: it opens F2 (Customize)\n"
                         "and F12 (Shut down/Restart) on this console. "
                         f"At least {shadow.MIN_LENGTH} characters, typed twice.")
            yield from _row("New password", "new", "", secret=True, enter="next")
            yield from _row("Repeat password", "again", "", secret=True)
            yield Horizontal(Button("Set password (F10)", id="set"), classes="buttons")
        yield Static("", id="message", classes="hint")
        yield KeyBar(self.KEYS)

    def on_mount(self) -> None:
        self.query_one("#new", Input).focus()
        self.set_interval(RECHECK_S, self._recheck)

    def say(self, text: str, css: str = "hint") -> None:
        w = self.query_one("#message", Static)
        w.set_classes(css)
        w.update(escape(console_safe(text)))

    def action_blocked(self) -> None:
        self.say("Set the root password first: nothing else on this console works without it.")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        # Enter in "new" moves to "again" by itself (FieldInput enter="next"): only "again" submits.
        self.action_apply()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.action_apply()

    def action_apply(self) -> None:
        if self.busy:
            return
        new, again = self.query_one("#new", Input).value, self.query_one("#again", Input).value
        self.query_one("#err-new", Static).update("")
        self.query_one("#err-again", Static).update("")
        try:
            shadow.check_new_password(new, again)
        except UserError as e:
            wid = "again" if e.message.startswith("confirm") else "new"
            self.query_one(f"#err-{wid}", Static).update(f"  {escape(e.message)} - {escape(e.hint or '')}")
            self.query_one(f"#{wid}", Input).focus()
            return
        be = self.app.backend
        self.busy = True
        self.say("Setting the root password...")
        # This screen closes only when the password is set: the keys typed behind Enter (F2 for the
        # login) wait for the status screen (ui.KeyOrder), or come back here if setting it failed.
        app = self.app
        self._key_hold = app.hold_keys() if isinstance(app, KeyOrder) else None

        def job() -> bool:
            if not needs_root_password(be):
                return False  # set on the other console meanwhile: do not overwrite it
            be.set_root_password(new)
            return True

        in_thread(self, job, self._done, self._failed, group="firstboot", exclusive=True)

    def _done(self, set_here: bool) -> None:
        self.busy = False
        self._leave("Root password set." if set_here else
                    "The root password was set on another console meanwhile; it was kept.")

    def _failed(self, e: BaseException) -> None:
        self.busy = False
        self._release_keys()
        self.say(f"Not set: {describe_error(e)}", "error")

    def _release_keys(self) -> None:
        app = self.app
        if isinstance(app, KeyOrder) and self._key_hold is not None:
            app.release_keys(self._key_hold)  # only that hold: a screen change may have taken over
        self._key_hold = None

    def _recheck(self) -> None:
        if self.busy:
            return
        be = self.app.backend
        in_thread(self, lambda: needs_root_password(be),
                  lambda locked: None if locked or self.busy else self._leave(
                      "The root password was set on another console."),
                  lambda _: None, group="firstboot-check", exclusive=True)

    def _leave(self, note: str) -> None:
        if not self.is_active:
            self._release_keys()
            return  # a dialog covers it: the next re-check leaves once that is closed
        self.dismiss(None)
        notice = getattr(self.app, "notice", None)
        if callable(notice):
            notice(note)
