"""The installer on the ISO's console: ``qx-console --installer`` (tty1 and serial of the live system).

:class:`InstallerApp` walks the operator through the steps of an install and hands the result to
:mod:`qx_install.engine`; the screens live in :mod:`qx_console.installer_screens`.

Interactive call order (each step is a screen pushed on the previous one, so Esc always goes back one
step; steps that do not apply are skipped, and skipped again on the way back):

1. :class:`~qx_console.installer_screens.WelcomeScreen` — keyboard layout (applied at once with
   :func:`qx_console.keyboard.apply_layout`), or "Live: try without installing" (the app exits with
   :data:`LIVE` and ``qx-console`` starts the normal status console). Meanwhile a worker finds the
   installation payload (:func:`qx_install.payload.find`); without one nothing can be installed.
2. :class:`~qx_console.installer_screens.DiskScreen` — :func:`qx_install.disks.list_disks` in a worker;
   the boot medium and unusable disks are listed with their reason and cannot be chosen.
3. :class:`~qx_console.installer_screens.ModeScreen` — only for a disk holding Quantix OS: upgrade,
   reinstall keeping data (keep or reset the host configuration), or wipe.
4. :class:`~qx_console.installer_screens.PasswordScreen` — root password twice (console policy,
   :func:`qx_console.shadow.check_new_password`); only its hash is kept. Skipped when the existing
   host configuration (and so its root password) is kept.
5. :class:`~qx_console.installer_screens.InstallNetworkScreen` — the console's network form and hostname.
   Skipped with the password.
6. :class:`~qx_console.installer_screens.ConfirmScreen` — :func:`qx_install.engine.plan` in a worker, its
   ``summary()`` shown; "Install" (a wipe of a disk that has partitions also needs the word WIPE typed).
7. :class:`~qx_console.installer_screens.ProgressScreen` — :func:`qx_install.engine.execute` in a thread
   worker of the app (not of a screen: nothing the operator does stops it), then
   :class:`~qx_console.installer_screens.DoneScreen` (remove the medium, Enter restarts through
   :meth:`HostBackend.power`) or :class:`~qx_console.installer_screens.FailureScreen` (cause, step, log).

Unattended, two ways:

* ``InstallerApp(backend, answer=...)`` runs the answer file's install itself and shows only its progress
  (:meth:`unattended_job`: same engine, ``source="answer-file"``; then the answer's ``after``).
* On the live ISO, ``qx-install auto`` (``qx-install-auto.service``) installs in a process of its own and
  keeps ``/run/quantix/install/status.json`` current. The installer watches that file (``status_file``):
  once it appears, the console shows that install's progress and outcome instead of the interactive
  steps (:meth:`follow_job`) — unless the operator's own install already runs. It never starts a second
  install, and it does not reboot: the service does, as its answer file says.

Invariants: nothing is written to any disk before the operator pressed Install on the confirm screen
(every earlier step only reads); the clear-text root password never leaves the password screen (the
choices hold its hash); results of a worker whose screen is gone are dropped
(:func:`qx_console.ui.in_thread`, :func:`qx_console.ui.alive`); like the status console it cannot be quit
or stopped from the keyboard (Live is the way out).
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from textual.app import App
from textual.driver import Driver

from qx_common import log
from qx_common.errors import QxError
from qx_console.app import TERMINAL_SIGNALS
from qx_console.backend import HostBackend
from qx_console.hostconfig import HostConfig
from qx_console.keyboard import DEFAULT_LAYOUT
from qx_console.ui import CSS, ErrorScreen, KeyOrder, console_driver_class, console_safe

if TYPE_CHECKING:
    from qx_install.disks import Disk

_log = log.get("console.installer")

# The app's return value when the operator chose to use the live system instead of installing.
LIVE = "live"

# Where qx-install auto reports its unattended install (qx_install.cli.STATUS_FILE).
STATUS_FILE = Path("/run/quantix/install/status.json")
FOLLOW_POLL_S = 0.5  # how often the progress of qx-install auto is read from its status file
WATCH_S = 1.0        # how often the interactive installer looks whether qx-install auto has started


class UnattendedFailed(QxError):
    """qx-install auto stopped (read from its status file): the message, the step and the log."""

    def __init__(self, message: str, *, step: str, log_path: str | None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint or None)
        self.step = step
        self.log_path = log_path


def read_status(path: Path) -> dict[str, Any] | None:
    """qx-install auto's status (``state``: running / done / failed); None while there is none. A file
    being replaced or not yet valid JSON reads as None (it is written atomically; the next read has it)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("state") in ("running", "done", "failed") else None

MODES = ("wipe", "keep-data", "upgrade")

INSTALLER_CSS = CSS + """
OptionList > .option-list--option-disabled { color: yellow; text-style: none; }
#summary { height: auto; max-height: 12; border: solid white; padding: 0 1; }
#steps { height: auto; }
"""


@dataclass
class Choices:
    """What the operator chose so far; read by the later steps and by :meth:`InstallerApp.plan_install`.

    ``root_password_hash`` and ``host`` are ``None`` when the existing ones on the disk are kept
    (upgrade, or keep-data keeping the configuration)."""

    keyboard: str = DEFAULT_LAYOUT
    disk: Disk | None = None
    mode: str = "wipe"
    keep_config: bool = False
    root_password_hash: str | None = None
    host: HostConfig | None = None

    @property
    def asks_settings(self) -> bool:
        """Whether the password and network steps apply: not when the disk's configuration is kept."""
        return not (self.mode == "upgrade" or (self.mode == "keep-data" and self.keep_config))


def entered_fields(cfg: HostConfig) -> tuple[str, ...]:
    """The settings the operator entered, at the provenance store's granularity: the hostname (always
    typed or confirmed) and each network setting that differs from the factory default. The rest keep
    the source "default" on the installed host (the status screen shows where each setting came from)."""
    from qx_console.hostconfig import NETWORK_FIELDS, NetworkConfig

    factory = NetworkConfig()
    changed = [f for f in NETWORK_FIELDS
               if getattr(cfg.network, f.split(".", 1)[1]) != getattr(factory, f.split(".", 1)[1])]
    return ("hostname", *changed)


class InstallerApp(KeyOrder, App[str | None], inherit_bindings=False):
    """The installer. ``return_value`` is :data:`LIVE` when the operator chose the live system.

    ``backend`` lists the NICs for the network form and restarts the machine at the end (the live
    system's :class:`~qx_console.linux.LinuxBackend`; the in-memory one in tests). ``media_dirs`` are
    where :func:`qx_install.payload.find` looks (``None``: its defaults, the ISO). ``boot_medium``: the
    device paths of the installation medium (``None``: :func:`qx_install.disks.find_boot_medium`).
    ``disk_include``: devices :func:`~qx_install.disks.list_disks` lists although it normally skips
    them (loop devices). ``only_disks``: list these devices and no others (``qx-console --installer
    --disk``; tests, which must never offer the machine's own disks). ``log_path``: the install log
    (``None``: the engine's, ``/run/quantix/install.log``). ``answer``: a
    :class:`qx_install.answer.Answer` — an unattended install, no questions.
    """

    TITLE = "Quantix OS Installer"
    CSS = INSTALLER_CSS
    ENABLE_COMMAND_PALETTE = False

    def get_driver_class(self) -> type[Driver]:
        # Textual's Linux driver, but input that is not UTF-8 does not end the console and the output keeps
        # to the console font (ui.ConsoleDriver).
        return console_driver_class(super().get_driver_class())

    def __init__(
        self,
        backend: HostBackend,
        *,
        media_dirs: list[Path] | None = None,
        boot_medium: Collection[str] | None = None,
        disk_include: Collection[str] = (),
        only_disks: Collection[str] | None = None,
        log_path: Path | None = None,
        answer: Any = None,
        status_file: Path | None = STATUS_FILE,
        ready_file: Path | None = None,
    ) -> None:
        super().__init__()
        self.backend = backend
        self.ready_file = ready_file  # /run/quantix/console/<tty>.ready: this terminal's console is up
        self.media_dirs = media_dirs
        self.boot_medium = boot_medium
        self.only_disks = tuple(only_disks) if only_disks is not None else None
        self.disk_include = tuple(disk_include) + (self.only_disks or ())
        self.log_path = log_path
        self.answer = answer
        self.status_file = status_file
        self.followed = False  # qx-install auto's install was (or is being) shown: never switch to it twice
        self._stop = threading.Event()  # set when the app ends: the follow loop stops waiting
        self.choices = Choices()
        self.payload: Any = None  # qx_install.payload.Payload once found
        self.payload_error: BaseException | None = None
        self.errors: list[BaseException] = []
        self.result: Any = None  # engine.Result of a finished install
        self.install_error: BaseException | None = None
        self.installing = False  # an install runs: nothing may start a second one
        self._payload_waiters: list[Callable[[], None]] = []

    # -- start -----------------------------------------------------------------------------------
    def on_mount(self) -> None:
        from qx_console.installer_screens import ProgressScreen, WelcomeScreen

        if not self.is_headless and threading.current_thread() is threading.main_thread():
            # As the status console: the terminal's job-control signals must not end or stop it (set
            # after Textual's driver installed its own SIGTSTP handler).
            for sig in TERMINAL_SIGNALS:
                signal.signal(sig, signal.SIG_IGN)
        self.call_after_refresh(self._report_console_ready)
        if self.answer is not None:
            self.installing = True
            self.push_screen(ProgressScreen(self.unattended_job, title="Unattended installation"))
            return
        self.push_screen(WelcomeScreen())
        self._search_payload()
        if self.status_file is not None:
            self._watch()
            self.set_interval(WATCH_S, self._watch)

    def on_unmount(self) -> None:
        self._stop.set()

    def _report_console_ready(self) -> None:
        """The first frame is on the screen: this terminal's console is up (qx-node's health reads it)."""
        from qx_common.version import product_version
        from qx_console.readiness import write_ready

        write_ready(self.ready_file, product_version())

    # -- qx-install auto (a separate process) ----------------------------------------------------------
    def _watch(self) -> None:
        """Timer: has qx-install auto started (its status file appeared)? Read in a worker."""
        if self.followed or self.installing or self.status_file is None:
            return
        path = self.status_file
        self.run_worker(lambda: self._watched(read_status(path)), thread=True, group="watch", exclusive=True,
                        exit_on_error=False)

    def _watched(self, status: dict[str, Any] | None) -> None:
        if status is not None:
            try:
                self.call_from_thread(self.follow_unattended)
            except RuntimeError:  # the app has stopped meanwhile
                pass

    def follow_unattended(self) -> None:
        """Show qx-install auto's install in place of the interactive steps (UI thread)."""
        from qx_console.installer_screens import ProgressScreen

        if self.followed or self.installing:
            return
        self.followed = self.installing = True
        self.push_screen(ProgressScreen(self.follow_job, title="Unattended installation (answer file)"))

    def follow_job(self, progress: Callable[[Any], None]) -> Any:
        """Worker thread: report qx-install auto's progress until it is done (an engine ``Result``) or failed
        (:class:`UnattendedFailed`)."""
        from qx_install import engine

        assert self.status_file is not None
        while not self._stop.is_set() and self.is_running:
            st = read_status(self.status_file)
            if st is not None and st["state"] == "done":
                return engine.Result(mode=str(st.get("mode", "")), disk=str(st.get("disk", "")),
                                     version=str(st.get("version", "")), slot=str(st.get("slot", "")),
                                     log_path=None)
            if st is not None and st["state"] == "failed":
                raise UnattendedFailed(str(st.get("message", "the unattended install failed")),
                                       step=str(st.get("step", "")), log_path=st.get("log") or None,
                                       hint=str(st.get("hint", "")) or None)
            if st is not None:
                progress(engine.Progress(str(st.get("step", "")), int(st.get("index", 0) or 0),
                                         int(st.get("total", 0) or 0), int(st.get("done", 0) or 0),
                                         int(st.get("size", 0) or 0), str(st.get("message", ""))))
            self._stop.wait(FOLLOW_POLL_S)
        raise UnattendedFailed("the console stopped following the unattended install", step="", log_path=None)

    def _search_payload(self) -> None:
        self.payload, self.payload_error = None, None
        self.run_worker(self._find_payload, thread=True, group="payload", exclusive=True, exit_on_error=False)

    def _find_payload(self) -> None:
        from qx_install import payload

        try:
            found = payload.find(self.media_dirs)
        except Exception as e:  # noqa: BLE001 - shown on the welcome screen; the live choice still works
            self.call_from_thread(self._payload_found, None, e)
            return
        self.call_from_thread(self._payload_found, found, None)

    def _payload_found(self, found: Any, error: BaseException | None) -> None:
        """UI thread: record the search's outcome and run what waited for it."""
        self.payload, self.payload_error = found, error
        if error is not None:
            _log.error("no installation payload: %s", error)
        waiters, self._payload_waiters = self._payload_waiters, []
        for w in waiters:
            w()

    def list_disks(self, min_bytes: int) -> list[Disk]:
        """The disks to offer (blocking: from a worker), boot medium marked, ``only_disks`` applied."""
        from qx_install import disks

        boot = set(self.boot_medium) if self.boot_medium is not None else disks.find_boot_medium()
        found = disks.list_disks(min_bytes=min_bytes, boot_medium=tuple(sorted(boot)), include=self.disk_include)
        if self.only_disks is not None:
            wanted = {os.path.realpath(p) for p in self.only_disks}
            found = [d for d in found if os.path.realpath(d.path) in wanted]
        return found

    def when_payload_known(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` (on the UI thread) once the payload search has finished, now if it has."""
        if self.payload is not None or self.payload_error is not None:
            callback()
        else:
            self._payload_waiters.append(callback)

    # -- the steps, in order (each screen calls the next when the operator continues) -----------------
    def start_disk_selection(self) -> None:
        from qx_console.installer_screens import DiskScreen

        self.push_screen(DiskScreen())

    def disk_chosen(self, disk: Disk) -> None:
        from qx_console.installer_screens import ModeScreen

        self.choices.disk = disk
        if disk.quantix is not None:
            self.push_screen(ModeScreen(disk))
        else:
            self.mode_chosen("wipe", keep_config=False)

    def mode_chosen(self, mode: str, *, keep_config: bool) -> None:
        from qx_console.installer_screens import ConfirmScreen, PasswordScreen

        assert mode in MODES, mode
        self.choices.mode, self.choices.keep_config = mode, keep_config
        if self.choices.asks_settings:
            self.push_screen(PasswordScreen())
        else:
            self.choices.root_password_hash, self.choices.host = None, None
            self.push_screen(ConfirmScreen())

    def password_chosen(self, password_hash: str) -> None:
        from qx_console.installer_screens import InstallNetworkScreen

        self.choices.root_password_hash = password_hash
        self.push_screen(InstallNetworkScreen(self.choices.host or HostConfig()))

    def network_chosen(self, cfg: HostConfig) -> None:
        from qx_console.installer_screens import ConfirmScreen

        self.choices.host = cfg
        self.push_screen(ConfirmScreen())

    def plan_install(self) -> Any:
        """:func:`qx_install.engine.plan` for the current choices (blocking: call it from a worker)."""
        from qx_install import engine

        c = self.choices
        assert c.disk is not None and self.payload is not None
        return engine.plan(c.disk, payload=self.payload, mode=c.mode, host=c.host,
                           root_password_hash=c.root_password_hash, keyboard=c.keyboard,
                           keep_config=c.keep_config, source="installer",
                           host_fields=entered_fields(c.host) if c.host is not None else ())

    def start_install(self, plan: Any) -> None:
        """Replace the confirm screen by the progress screen and run the plan; there is no way back.
        At most one install runs (a second Install keypress queued behind the first does nothing)."""
        from qx_install import engine
        from qx_console.installer_screens import ProgressScreen

        if self.installing:
            return
        self.installing = True
        log_path = self.log_path or engine.DEFAULT_LOG
        self.switch_screen(ProgressScreen(lambda progress: engine.execute(plan, progress, log_path=log_path),
                                          steps=plan.steps()))

    def install_finished(self, result: Any, error: BaseException | None) -> None:
        """UI thread, from the progress screen's worker: show the outcome in place of the progress.

        Unattended, the answer file's ``after`` (reboot/poweroff) follows a success by itself."""
        from qx_console.installer_screens import DoneScreen, FailureScreen, ProgressScreen

        self.result, self.install_error = result, error
        self.installing = False
        while len(self.screen_stack) > 1 and not isinstance(self.screen, ProgressScreen):
            self.pop_screen()  # a dialog (error panel) over the progress: the outcome matters more
        self.switch_screen(DoneScreen(result) if error is None else FailureScreen(error))

    def start_over(self) -> None:
        """After a failure: back to the disk picker (which lists the disks again). After a failed
        unattended install: the interactive installer from its first step."""
        from qx_console.installer_screens import DiskScreen, WelcomeScreen

        while len(self.screen_stack) > 1 and not isinstance(self.screen_stack[-1], (DiskScreen, WelcomeScreen)):
            self.pop_screen()
        if isinstance(self.screen, DiskScreen):
            return
        if isinstance(self.screen, WelcomeScreen) and self.payload is not None:
            self.start_disk_selection()
            return
        self.answer = None
        self.push_screen(WelcomeScreen())
        self._search_payload()

    # -- unattended ----------------------------------------------------------------------------
    def unattended_job(self, progress: Callable[[Any], None]) -> Any:
        """The answer file's install (runs in the progress screen's worker thread).

        The seam for the unattended path: :attr:`answer` (a :class:`qx_install.answer.Answer`) chooses
        the disk by its filter, never "the first disk" (zero or several matches stop with the list of
        candidates), and carries the settings; the engine is the same as the interactive one.
        """
        from qx_install import disks, engine, payload

        a = self.answer
        found = payload.find(self.media_dirs)
        self.payload = found  # read by the done screen (UI thread) only after this job returned
        disk = disks.select(self.list_disks(found.min_disk_bytes), a.install.disk)
        self.choices.disk = disk
        plan = engine.plan(disk, payload=found, mode=a.install.mode, host=a.host,
                           root_password_hash=a.install.root_password_hash or None, keyboard=a.install.keyboard,
                           keep_config=a.install.keep_config, source="answer-file", host_fields=a.host_fields)
        return engine.execute(plan, progress, log_path=self.log_path or engine.DEFAULT_LOG)

    # -- never quit, never die (the same rules as qx_console.app.ConsoleApp) ------------------------
    async def action_quit(self) -> None:
        """Not bound to any key; inert should anything still call it."""

    def action_help_quit(self) -> None:
        """Textual's Ctrl+C hint has nothing to say here."""

    def action_suspend_process(self) -> None:
        """Suspending would leave the operator a stopped installer."""

    def action_command_palette(self) -> None:
        """The command palette is off (and draws glyphs the console fonts lack)."""

    def copy_to_clipboard(self, text: str) -> None:
        """Nothing leaves the console (OSC 52 would print garbage on tty1 and serial; passwords)."""

    def notice(self, text: str) -> None:
        """A one-line message on the current screen's message line (where :func:`in_thread` reports a
        failure that arrived after its screen was left)."""
        for w in self.screen.query("#message"):
            w.update(f"[yellow]{escape(console_safe(text))}[/]")

    def notify(self, message: str, *, title: str = "", severity: str = "information",
               timeout: float | None = None, markup: bool = True) -> None:
        """Textual's toasts draw glyphs the console fonts lack: the message line instead."""
        if markup:
            from rich.text import Text
            message = Text.from_markup(message).plain
        self.notice(f"{title}: {message}" if title else message)

    def show_error(self, title: str, error: BaseException) -> None:
        """Where :func:`qx_console.ui.in_thread` reports a worker's unexpected error."""
        self.errors.append(error)
        _log.error("%s: %s", title, error, exc_info=error)
        self.push_screen(ErrorScreen(title, error))

    def export_screenshot(self, *, title: str | None = None, simplify: bool = False) -> str:
        """As :meth:`qx_console.app.ConsoleApp.export_screenshot`: the Linux console's palette on a
        16-colour terminal (snapshots of tty1 and serial)."""
        if self.console.color_system in ("standard", "windows"):
            from qx_console.screenshot import linux_console_svg
            return linux_console_svg(self, title=title)
        return super().export_screenshot(title=title, simplify=simplify)


@dataclass
class StepProgress:
    """One row of the progress screen: the latest report of one engine step."""

    step: str
    done: int = 0
    size: int = 0
    message: str = ""
    index: int = 0  # the engine's 1-based step number (0: not reported yet)
    started: bool = False
    finished: bool = False

    @property
    def fraction(self) -> float | None:
        if self.finished:
            return 1.0
        return min(1.0, self.done / self.size) if self.size > 0 else None


@dataclass
class ProgressBoard:
    """The rows of the progress screen: the plan's steps (known up front for an interactive install,
    else added as they arrive), each with its latest report. Engine steps run one after the other, so a
    report for a step finishes every step before it. Pure data: the screen only draws it."""

    rows: list[StepProgress] = field(default_factory=list)
    total: int = 0

    @classmethod
    def of(cls, steps: list[str] | None) -> ProgressBoard:
        return cls([StepProgress(s) for s in steps or []], len(steps or []))

    @property
    def current(self) -> StepProgress | None:
        started = [r for r in self.rows if r.started]
        return started[-1] if started else None

    def update(self, p: Any) -> None:
        """Take one :class:`qx_install.engine.Progress`."""
        self.total = max(self.total, int(p.total or 0))
        pos = next((i for i, r in enumerate(self.rows) if r.step == p.step), None)
        if pos is None:
            self.rows.append(StepProgress(p.step))
            pos = len(self.rows) - 1
        for r in self.rows[:pos]:
            r.started = r.finished = True
        row = self.rows[pos]
        row.started = True
        row.index = int(p.index or 0) or pos + 1
        row.done, row.size, row.message = int(p.done or 0), int(p.size or 0), str(p.message or "")

    def finish(self) -> None:
        for r in self.rows:
            r.started = r.finished = True
