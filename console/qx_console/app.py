"""The DCUI application: Status first; F2 Customize (root password, unless lockdown); F12 power.

Call order at start: ``on_mount`` pushes :class:`StatusScreen` and, in a worker, reverts a network
change an earlier console left unconfirmed (:func:`qx_console.safeapply.recover_interrupted`). The
first status frame writes the ready file ``/run/quantix/console/<tty>.ready`` (JSON with ``pid``) that
qx-node's health check reads.

Never dies: blocking work runs in thread workers whose errors open :class:`ErrorScreen`; an exception
that still reaches Textual is shown the same way and the screens are rebuilt instead of exiting.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from textual.app import App

from qx_common import log
from qx_console.backend import HostBackend, HostStatus
from qx_console.customize import CustomizeScreen, LoginScreen, PowerScreen
from qx_console.safeapply import CONFIRM_SECONDS, recover_interrupted
from qx_console.status import StatusScreen
from qx_console.ui import CSS, ErrorScreen, in_thread

_log = log.get("console")


class ConsoleApp(App[None]):
    TITLE = "Quantix OS"
    CSS = CSS
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [("f2", "customize", "Customize"), ("f12", "power", "Power")]

    def __init__(
        self,
        backend: HostBackend,
        *,
        ready_file: Path | None = None,
        refresh_s: float = 5.0,
        confirm_seconds: float = CONFIRM_SECONDS,
    ) -> None:
        super().__init__()
        self.backend = backend
        self.ready_file = ready_file
        self.refresh_s = refresh_s
        self.confirm_seconds = confirm_seconds
        self.ready_written = False
        self.recovered_network = False
        self.errors: list[BaseException] = []

    def on_mount(self) -> None:
        self.push_screen(StatusScreen())
        in_thread(self.screen, lambda: recover_interrupted(self.backend), self._recovered)
        from qx_console.firstboot import ask_if_locked  # raw image: no root password yet, ask for one first
        ask_if_locked(self)

    def _recovered(self, reverted: bool) -> None:
        self.recovered_network = reverted
        if reverted:
            self.notice("An unconfirmed network change (console restarted meanwhile) was reverted.")

    def notice(self, text: str) -> None:
        """A one-line message on the status screen (Textual's toasts draw glyphs console fonts lack)."""
        for scr in self.screen_stack:
            if isinstance(scr, StatusScreen):
                scr.query_one("#notice").update(text)

    # -- readiness -------------------------------------------------------------------------------
    def first_status_shown(self, status: HostStatus | None) -> None:
        if not self.ready_written:
            self.ready_written = True
            self.call_after_refresh(self._write_ready, status)

    def _write_ready(self, status: HostStatus | None) -> None:
        if self.ready_file is None:
            return
        try:
            self.ready_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.ready_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({"pid": os.getpid(), "version": status.version if status else ""}))
            os.replace(tmp, self.ready_file)
        except OSError as e:
            _log.warning("cannot write %s: %s", self.ready_file, e)

    # -- actions ---------------------------------------------------------------------------------
    def action_customize(self) -> None:
        if isinstance(self.screen, StatusScreen):
            in_thread(self.screen, lambda: self.backend.load_config()[0].lockdown, self._maybe_login)

    def _maybe_login(self, lockdown: bool) -> None:
        if lockdown:
            self.notice("Lockdown mode: the console cannot change this host. Use the management API.")
            return

        def after(ok: bool | None) -> None:
            if ok:
                self.push_screen(CustomizeScreen())
        self.push_screen(LoginScreen(), after)

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
