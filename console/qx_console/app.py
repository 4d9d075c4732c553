"""The DCUI application: Status first; F2 Customize (root password, unless lockdown); F12 power.

Call order at start: ``on_mount`` pushes :class:`StatusScreen` and, in a worker, reverts a network
change an earlier console left unconfirmed (:func:`qx_console.safeapply.recover_interrupted`). The
first status frame writes the ready file ``/run/quantix/console/<tty>.ready`` (JSON with ``pid``) that
qx-node's health check reads.

Never dies: blocking work runs in thread workers whose errors open :class:`ErrorScreen`; an exception
that still reaches Textual is shown the same way and the screens are rebuilt instead of exiting.

Cannot be quit: on tty1 and the serial line nothing but F12 (with the root password) may end or stop the
console. Textual's default bindings (Ctrl+Q quits, Ctrl+C advertises it) are not inherited, the actions
that end or suspend the app do nothing, its toasts become our notice line, Ctrl+C in a field does not
send the selection to the terminal, and the terminal's job-control signals (SIGINT, SIGQUIT, SIGTSTP,
SIGTTIN, SIGTTOU) are ignored once the app runs on a real terminal. SIGTERM (systemd stopping the
service) and SIGHUP (the line hung up; systemd starts a fresh console) still end it.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from textual import events
from textual.app import App
from textual.binding import Binding
from textual.driver import Driver

from qx_common import log
from qx_console.readiness import write_ready
from qx_console.backend import HostBackend, HostStatus
from qx_console.customize import CustomizeScreen, LoginScreen, PowerScreen
from qx_console.safeapply import CONFIRM_SECONDS, recover_interrupted
from qx_console.status import StatusScreen
from qx_console.ui import CSS, ErrorScreen, KeyOrder, console_driver_class, console_safe, in_thread

_log = log.get("console")

# Signals a terminal sends on its own keys (Ctrl+C, Ctrl+\, Ctrl+Z) or for background I/O: none of
# them may end or stop the console. (In raw mode the keys arrive as keys; these cover kill(1) and the
# moments before raw mode.)
TERMINAL_SIGNALS = (signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU)

IDLE_LOGOUT_S = 600.0  # a Customize session (or a login prompt) left alone this long is closed


def login_backoff_s(failures: int) -> float:
    """Seconds the login refuses further tries after ``failures`` wrong passwords in a row: two are
    free (typos), then 5 s doubling up to 5 min (guessing at the console becomes hopeless)."""
    return 0.0 if failures < 3 else min(300.0, 5.0 * 2 ** (failures - 3))


class ConsoleApp(KeyOrder, App[None], inherit_bindings=False):
    TITLE = "Quantix OS"
    CSS = CSS
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [Binding("f2", "customize", "Customize"), Binding("f12", "power", "Power")]

    def get_driver_class(self) -> type[Driver]:
        # Textual's Linux driver, but input that is not UTF-8 does not end the console and the output keeps
        # to the console font (ui.ConsoleDriver).
        return console_driver_class(super().get_driver_class())

    def __init__(
        self,
        backend: HostBackend,
        *,
        ready_file: Path | None = None,
        refresh_s: float = 5.0,
        confirm_seconds: float = CONFIRM_SECONDS,
        idle_logout_s: float = IDLE_LOGOUT_S,
        idle_check_s: float = 5.0,
        login_backoff: Callable[[int], float] = login_backoff_s,
        clock: Callable[[], float] = time.monotonic,
        banner: str = "",
    ) -> None:
        """``idle_logout_s``: Customize (and any login prompt) closes after this long without a key,
        checked every ``idle_check_s``; ``login_backoff(failures)``: how long the login refuses tries
        after that many wrong passwords; ``clock``: monotonic seconds (both timers read it); ``banner``:
        a warning every screen shows in its title bar (the live system's "changes are lost")."""
        super().__init__()
        self.backend = backend
        self.banner = banner
        self.ready_file = ready_file
        self.refresh_s = refresh_s
        self.confirm_seconds = confirm_seconds
        self.idle_logout_s = idle_logout_s
        self.idle_check_s = idle_check_s
        self.login_backoff = login_backoff
        self.clock = clock
        self.last_input = clock()
        self.failed_logins = 0  # wrong passwords in a row (any login prompt of this console)
        self.login_blocked_until = 0.0  # clock() before which the login refuses to check a password
        self.ready_written = False
        self.recovered_network = False
        self.errors: list[BaseException] = []

    def on_mount(self) -> None:
        if not self.is_headless and threading.current_thread() is threading.main_thread():
            # After Textual's driver installed its own SIGTSTP handler (which stops the process).
            for sig in TERMINAL_SIGNALS:
                signal.signal(sig, signal.SIG_IGN)
        self.push_screen(StatusScreen())
        in_thread(self.screen, lambda: recover_interrupted(self.backend), self._recovered,
                  what="Reverting an unconfirmed network change")
        from qx_console.firstboot import ask_if_locked  # raw image: no root password yet, ask for one first
        ask_if_locked(self)
        # Ready as soon as the console is drawn and takes keys (F2, F12), whether it shows the status or
        # asks for the first root password: not after the first host status. That status comes from
        # qx-node and qx-update, and qx-node's health (the boot's health gate) waits for this console, so
        # on a slow host the two waited for each other until the gate gave up (seen in the install e2e).
        self.first_status_shown(None)
        self.set_interval(self.idle_check_s, self.logout_if_idle)

    # -- idle logout -------------------------------------------------------------------------------
    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, (events.Key, events.MouseDown)):
            self.last_input = self.clock()
        await super().on_event(event)

    def logout_if_idle(self) -> None:
        """Close Customize (every screen above the status screen) after ``idle_logout_s`` without a
        key. Not during a safe apply waiting for its answer (its own timer reverts) nor over the
        first-boot password screen (which cannot be left)."""
        if self.clock() - self.last_input < self.idle_logout_s:
            return
        from qx_console.firstboot import FirstBootPasswordScreen
        from qx_console.network_screens import SafeApplyScreen

        stack = self.screen_stack
        if any(isinstance(s, FirstBootPasswordScreen) or (isinstance(s, SafeApplyScreen) and s.outcome is None)
               for s in stack):
            return
        status = next((s for s in stack if isinstance(s, StatusScreen)), None)
        if status is None or status is self.screen:
            return
        # Once: the pops complete after this returns, and the next check must not pop again.
        self.last_input = self.clock()
        status.pop_until_active()
        minutes = self.idle_logout_s / 60
        self.notice(f"Logged out after {minutes:g} min without a key press.")

    def _recovered(self, reverted: bool) -> None:
        self.recovered_network = reverted
        if reverted:
            self.notice("An unconfirmed network change (console restarted meanwhile) was reverted.")

    def notice(self, text: str) -> None:
        """A one-line message on the status screen, and on the current screen's message line if it has
        one (Textual's toasts draw glyphs the console fonts lack)."""
        from rich.markup import escape

        text = escape(console_safe(text))
        for scr in self.screen_stack:
            if isinstance(scr, StatusScreen):
                scr.query_one("#notice").update(text)
        if not isinstance(self.screen, StatusScreen):
            for w in self.screen.query("#message"):
                w.update(f"[yellow]{text}[/]")

    def notify(self, message: str, *, title: str = "", severity: str = "information",
               timeout: float | None = None, markup: bool = True) -> None:
        """Textual's notifications (also those Textual sends itself) go to :meth:`notice`."""
        if markup:
            from rich.text import Text
            message = Text.from_markup(message).plain
        self.notice(f"{title}: {message}" if title else message)

    # -- what must not end the console ----------------------------------------------------------
    async def action_quit(self) -> None:
        """Not bound to any key; kept inert should anything still call it (e.g. markup links)."""

    def action_help_quit(self) -> None:
        """Textual's Ctrl+C hint ("press Ctrl+Q to quit") has nothing to say here."""

    def action_suspend_process(self) -> None:
        """Suspending would leave the operator a stopped console."""

    def action_command_palette(self) -> None:
        """The command palette is off (and draws glyphs the console fonts lack)."""

    def copy_to_clipboard(self, text: str) -> None:
        """Ctrl+C/Ctrl+X in a field: kept inside the console. Textual would send the selection to the
        terminal as an OSC 52 sequence, which the Linux console and serial terminals print as garbage
        (and a password field's text must not leave the console)."""

    # -- readiness -------------------------------------------------------------------------------
    def first_status_shown(self, status: HostStatus | None) -> None:
        if not self.ready_written:
            self.ready_written = True
            self.call_after_refresh(self._write_ready, status)

    def _write_ready(self, status: HostStatus | None) -> None:
        from qx_common.version import product_version

        write_ready(self.ready_file, status.version if status else product_version())

    # -- actions ---------------------------------------------------------------------------------
    def action_customize(self) -> None:
        if isinstance(self.screen, StatusScreen):
            # The login opens after a backend call: the keys typed behind F2 (the password) wait for it.
            self.hold_keys()
            # exclusive: F2 pressed twice while the host is slow asks once, opens one login.
            in_thread(self.screen, self.backend.lockdown, self._maybe_login,
                      group="customize", exclusive=True, what="Reading the lockdown mode")

    def _maybe_login(self, lockdown: bool) -> None:
        if not isinstance(self.screen, StatusScreen):
            self.release_keys()
            return  # meanwhile the operator went elsewhere (F12): do not stack a second dialog

        def after(ok: bool | None) -> None:
            if ok:
                self.push_screen(CustomizeScreen())
        # Lockdown mode keeps SSH and the API out, not the physical console: it is switched off here.
        self.push_screen(LoginScreen("Customize system (lockdown mode is on)" if lockdown else "Customize system"),
                         after)

    def action_power(self) -> None:
        if isinstance(self.screen, (PowerScreen, LoginScreen)):
            return
        if isinstance(self.screen, CustomizeScreen):
            self.push_screen(PowerScreen())
            return

        def after(ok: bool | None) -> None:
            if ok:
                self.push_screen(PowerScreen())
        self.push_screen(LoginScreen("Shut down / Restart"), after)

    # -- screenshots -----------------------------------------------------------------------------
    def export_screenshot(self, *, title: str | None = None, simplify: bool = False) -> str:
        """What this terminal shows: on a 16-colour one (TERM=linux or vt220, as on tty1 and serial) the
        frame in the Linux console's palette (:mod:`qx_console.screenshot`), else Textual's 24-bit SVG."""
        if self.console.color_system in ("standard", "windows"):
            from qx_console.screenshot import linux_console_svg
            return linux_console_svg(self, title=title)
        return super().export_screenshot(title=title, simplify=simplify)

    # -- never die -------------------------------------------------------------------------------
    def show_error(self, title: str, error: BaseException) -> None:
        self.errors.append(error)
        _log.error("%s: %s", title, error, exc_info=error)
        self.push_screen(ErrorScreen(title, error))

    def _handle_exception(self, error: Exception) -> None:
        """A bug reached Textual: show it and rebuild the screens rather than exit (the default)."""
        try:
            self.errors.append(error)
            _log.error("unexpected error", exc_info=error)
            # The widget that raised has stopped processing messages: leave the old screens alone
            # (popping them would wait on it) and continue on fresh ones.
            self.push_screen(StatusScreen())
            self.push_screen(ErrorScreen("Internal error (the console keeps running)", error))
        except Exception:  # noqa: BLE001 - the app is beyond repair: let Textual exit, systemd restarts us
            super()._handle_exception(error)
