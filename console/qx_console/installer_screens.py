"""The installer's screens, one per step (order and flow: :mod:`qx_console.installer`).

Every screen has the title bar (step n of 7), one panel, a message line and the key bar; Esc goes back
one step (except on the first step and once the install has started); F10 continues. They only read
until the confirm screen's Install: disk listing, planning and installing run in thread workers.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Input, OptionList, Static
from textual.widgets.option_list import Option

from qx_common.errors import QxError, UserError
from qx_console import keyboard, shadow
from qx_console.hostconfig import HostConfig, ValidationError, validate
from qx_console.installer import LIVE, InstallerApp, ProgressBoard
from qx_console.network_screens import NetworkScreen, _row
from qx_install.answer import format_size
from qx_console.ui import ConsoleScreen, KeyBar, alive, console_safe, describe_error, from_thread, in_thread, text_bar

if TYPE_CHECKING:
    from qx_install.disks import Disk

STEPS = 7
TRANSPORTS = {"nvme": "NVMe", "sata": "SATA", "ata": "SATA", "usb": "USB", "virtio": "virtio", "scsi": "SCSI",
              "sas": "SAS", "mmc": "MMC", "loop": "loop"}
WIPE_WORD = "WIPE"


class StepScreen(ConsoleScreen[None]):
    """Title bar, key bar and message line of an installer step; Esc back, F10 continue (Tab/Shift+Tab
    move between fields: :class:`~qx_console.ui.ConsoleScreen`'s keys, none of Textual's own)."""

    BINDINGS = [("escape", "back", "Back"), ("f10", "next", "Continue")]
    STEP = 0
    NAME = ""
    KEYS = "Esc Back"

    @property
    def installer(self) -> InstallerApp:
        app = self.app
        assert isinstance(app, InstallerApp)
        return app

    def compose_title(self) -> ComposeResult:
        step = f"Step {self.STEP} of {STEPS}: " if self.STEP else ""
        yield Static(f"Quantix OS Installer - {step}{self.NAME}", id="titlebar")

    def compose_bottom(self) -> ComposeResult:
        yield Static("", id="message", classes="hint")
        yield KeyBar(self.KEYS)

    def say(self, text: str, css: str = "hint") -> None:
        """The screen's message line (plain text)."""
        w = self.query_one("#message", Static)
        w.set_classes(css)
        w.update(escape(console_safe(text)))

    def action_back(self) -> None:
        if self.is_active:  # never pop a screen (a dialog) that covers this one
            self.app.pop_screen()

    def action_next(self) -> None:
        """F10: what the screen's main button does."""


class ChoiceList(OptionList):
    """An option list whose highlight never drops off the enabled options: Textual's Page Up/Down
    leave nothing highlighted when only disabled options (an unusable disk) lie that way, and Enter
    would then do nothing without saying why."""

    def action_page_down(self) -> None:
        before = self.highlighted
        super().action_page_down()
        if self.highlighted is None:
            self.highlighted = before

    def action_page_up(self) -> None:
        before = self.highlighted
        super().action_page_up()
        if self.highlighted is None:
            self.highlighted = before


# -- 1 welcome ----------------------------------------------------------------------------------------
class WelcomeScreen(StepScreen):
    STEP, NAME = 1, "Welcome"
    KEYS = "Up/Down Layout  Enter Apply  Tab Next  F10 Install  F9 Live system"
    BINDINGS = [("escape", "back", "Back"), ("f10", "next", "Install"), ("f9", "live", "Live")]

    def compose(self) -> ComposeResult:
        yield from self.compose_title()
        with Vertical(classes="panel") as v:
            v.border_title = "Welcome to Quantix OS"
            yield Static("Looking for the installation payload...", id="payload")
            yield Static("Keyboard layout (Enter applies it at once):")
            yield OptionList(*[Option(f"{name:<4} {desc}", id=name) for name, desc in keyboard.LAYOUTS.items()],
                             id="layouts")
            yield Static("", id="layout-state")
            yield Horizontal(Button("Install Quantix OS", id="install"),
                             Button("Live: try without installing", id="live"), classes="buttons")
        yield from self.compose_bottom()

    def on_mount(self) -> None:
        layouts = self.query_one("#layouts", OptionList)
        layouts.highlighted = list(keyboard.LAYOUTS).index(self.installer.choices.keyboard)
        self._layout_state()
        layouts.focus()
        self.installer.when_payload_known(self._payload_known)

    def _layout_state(self, note: str = "") -> None:
        name = self.installer.choices.keyboard
        text = f"Keyboard: {keyboard.LAYOUTS[name]} ({name})"
        if note:  # one line: cut the reason, the log has it whole
            note = note if len(text) + 2 + len(note) <= 74 else note[:74 - len(text) - 5] + "..."
            text += f"  [yellow]{escape(console_safe(note))}[/]"
        self.query_one("#layout-state", Static).update(text)

    def _payload_known(self) -> None:
        if not alive(self):
            return
        app = self.installer
        if app.payload is not None:
            self.query_one("#payload", Static).update(
                f"This installs [b]Quantix OS {escape(str(app.payload.version))}[/b] on a disk of this server.\n"
                "Nothing is written before you confirm the installation (step 6).")
        else:
            self.query_one("#payload", Static).update(
                "[red]No installation payload:[/] " + escape(describe_error(app.payload_error or Exception()))
                + "\nQuantix OS cannot be installed from this medium; the live system still works.")
            self.query_one("#install", Button).disabled = True

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        name = str(event.option.id)
        self.installer.choices.keyboard = name
        self._layout_state("applying...")
        # loadkeys is a command: in a worker. Its failure (serial line, no kbd) is a note, not an error:
        # the layout is still written to the installed host.
        in_thread(self, lambda: keyboard.apply_layout(name), lambda note: self._applied(name, note),
                  group="layout", what="Applying the keyboard layout")
        self.query_one("#install", Button).focus()

    def _applied(self, name: str, note: str | None) -> None:
        if name == self.installer.choices.keyboard:
            self._layout_state(f"(not on this terminal: {note})" if note else "")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "install":
            self.action_next()
        elif event.button.id == "live":
            self.action_live()

    def action_next(self) -> None:
        app = self.installer
        if app.payload_error is not None:
            self.say("Nothing can be installed from this medium (no payload). F9 starts the live system.",
                     "error")
            return
        if app.payload is None:
            self.say("Still looking for the installation payload...")
        app.when_payload_known(lambda: self.is_active and app.payload is not None and app.start_disk_selection())

    def action_live(self) -> None:
        self.app.exit(LIVE)

    def action_back(self) -> None:
        self.say("This is the first step. F9 starts the live system without installing.")


# -- 2 disk -------------------------------------------------------------------------------------------
def transport_name(t: str) -> str:
    return TRANSPORTS.get((t or "").lower(), t or "?")


def disk_reason(d: Disk) -> str:
    """Why ``d`` cannot be chosen ("" if it can), as a sentence about "it"."""
    reason = str(d.unusable or "")
    if not reason and d.boot_medium:
        reason = "it is the installation medium"
    if not reason and d.read_only:
        reason = "it is read-only"
    return f"it {reason}" if reason.startswith("is ") else reason


def partitions_line(d: Disk) -> str:
    if not d.partitions:
        return "no partitions"
    parts = []
    for p in d.partitions:
        what = p.fstype or "no filesystem"
        name = p.partlabel or p.label
        parts.append(f"{p.number}:{what}" + (f" '{name}'" if name else "") + f" {format_size(p.size)}")
    return f"{len(d.partitions)} partition(s): " + ", ".join(parts)


def disk_prompt(d: Disk, width: int = 72) -> str:
    """The disk picker's lines for one disk (plain text, cut to ``width``)."""
    head = f"{d.name:<9} {format_size(d.size):>9}  {transport_name(d.transport):<6} {d.model or '(no model)'}"
    if d.serial:
        head += f"  S/N {d.serial}"
    lines = [head, f"  {d.stable_path}", f"  {partitions_line(d)}"]
    if d.quantix is not None:
        q = d.quantix
        state = "" if q.complete else ", INCOMPLETE install"
        lines.append(f"  holds Quantix OS {q.version or '?'} (host {q.hostname or '?'}{state})")
    reason = disk_reason(d)
    if reason:
        lines.append(f"  Cannot be used: {reason}")
    return "\n".join(ln if len(ln) <= width else ln[:width - 3] + "..." for ln in lines)


class DiskScreen(StepScreen):
    STEP, NAME = 2, "Target disk"
    KEYS = "Up/Down Move  Enter Select  R Rescan  Esc Back"
    BINDINGS = [("escape", "back", "Back"), ("f10", "next", "Select"), ("r", "rescan", "Rescan")]

    def __init__(self) -> None:
        super().__init__()
        self.disks: list[Disk] = []
        self.listed = False

    def compose(self) -> ComposeResult:
        yield from self.compose_title()
        with Vertical(classes="panel") as v:
            v.border_title = "Install on which disk?"
            yield Static("Listing disks...", id="disk-state")
            yield ChoiceList(id="disks")
        yield from self.compose_bottom()

    def on_mount(self) -> None:
        self.action_rescan()

    def on_screen_resume(self) -> None:
        if self.listed:  # back from a later step (or after a failed install): disks may have changed
            self.action_rescan()

    def action_rescan(self) -> None:
        app = self.installer
        payload = app.payload
        self.query_one("#disk-state", Static).update("Listing disks...")

        def job() -> tuple[list[Disk], int]:
            min_bytes = payload.min_disk_bytes  # reads the payload's partition definitions
            return app.list_disks(min_bytes), min_bytes

        in_thread(self, job, self._listed, self._failed, group="disks", exclusive=True)

    def _listed(self, listing: tuple[list[Disk], int]) -> None:
        found, min_bytes = listing
        ol = self.query_one("#disks", OptionList)
        old = self.disks[ol.highlighted].path if ol.highlighted is not None and self.disks else None
        self.disks, self.listed = list(found), True
        ol.clear_options()
        ol.add_options([Option(escape(console_safe(disk_prompt(d))), id=str(i), disabled=bool(disk_reason(d)))
                        for i, d in enumerate(self.disks)])
        usable = [i for i, d in enumerate(self.disks) if not disk_reason(d)]
        keep = next((i for i in usable if self.disks[i].path == old), None)
        if usable:
            ol.highlighted = keep if keep is not None else usable[0]
        need = format_size(min_bytes)
        if not self.disks:
            state = "[red]No disks found.[/] Attach a disk and press R."
        elif not usable:
            state = f"[red]None of the {len(self.disks)} disk(s) can be used[/] (reasons below; at least {need})."
        else:
            state = f"{len(usable)} of {len(self.disks)} disk(s) usable (at least {need} needed)."
        self.query_one("#disk-state", Static).update(state)
        ol.focus()

    def _failed(self, e: BaseException) -> None:
        self.query_one("#disk-state", Static).update(f"[red]Cannot list the disks:[/] {escape(describe_error(e))}")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self._choose(int(str(event.option.id)))

    def action_next(self) -> None:
        ol = self.query_one("#disks", OptionList)
        if ol.highlighted is None:
            self.say("No disk can be chosen.", "error")
            return
        self._choose(ol.highlighted)

    def _choose(self, index: int) -> None:
        d = self.disks[index]
        reason = disk_reason(d)
        if reason:  # disabled options are not selectable; a rescan may still race a keypress
            self.say(f"{d.name} cannot be used: {reason}", "error")
            return
        self.say("")
        self.installer.disk_chosen(d)


# -- 3 existing install -----------------------------------------------------------------------------
MODE_OPTIONS = (
    ("upgrade", "Upgrade: write the new version into the inactive slot, keep everything"),
    ("keep", "Reinstall keeping data and host configuration (VMs, network, password)"),
    ("reset", "Reinstall keeping data (VMs), reset host configuration and password"),
    ("wipe", "Wipe: erase the whole disk, nothing is kept"),
)


class ModeScreen(StepScreen):
    STEP, NAME = 3, "Existing installation"
    KEYS = "Up/Down Move  Enter Select  Esc Back"

    def __init__(self, disk: Disk) -> None:
        super().__init__()
        self.disk = disk

    def compose(self) -> ComposeResult:
        q = self.disk.quantix
        assert q is not None
        new = getattr(self.installer.payload, "version", "?")
        yield from self.compose_title()
        with Vertical(classes="panel") as v:
            v.border_title = "This disk holds Quantix OS"
            yield Static(f"{escape(self.disk.stable_path)}\nholds Quantix OS [b]{escape(q.version or '?')}[/b] "
                         f"(host [b]{escape(q.hostname or '?')}[/b]). This medium installs {escape(str(new))}.")
            opts = []
            for oid, text in MODE_OPTIONS:
                if oid == "upgrade" and not q.complete:
                    opts.append(Option(f"{text}\n  not possible: the install on this disk is incomplete",
                                       id=oid, disabled=True))
                else:
                    opts.append(Option(text, id=oid))
            yield ChoiceList(*opts, id="modes")
        yield from self.compose_bottom()

    def on_mount(self) -> None:
        ol = self.query_one("#modes", OptionList)
        ol.highlighted = 0 if self.disk.quantix and self.disk.quantix.complete else 1
        ol.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self._choose(str(event.option.id))

    def action_next(self) -> None:
        ol = self.query_one("#modes", OptionList)
        if ol.highlighted is not None:
            self._choose(str(ol.get_option_at_index(ol.highlighted).id))

    def _choose(self, oid: str) -> None:
        mode, keep = {"upgrade": ("upgrade", True), "keep": ("keep-data", True), "reset": ("keep-data", False),
                      "wipe": ("wipe", False)}[oid]
        self.installer.mode_chosen(mode, keep_config=keep)


# -- 4 root password --------------------------------------------------------------------------------
class PasswordScreen(StepScreen):
    STEP, NAME = 4, "Root password"
    KEYS = "Tab Next  Enter Continue  F10 Continue  Esc Back"

    def compose(self) -> ComposeResult:
        yield from self.compose_title()
        with Vertical(classes="panel") as v:
            v.border_title = "Root password of the installed host"
            yield Static(f"It opens F2 (Customize) and F12 on the host's console. At least {shadow.MIN_LENGTH} "
                         "characters.\nType it twice.")
            yield from _row("Root password", "new", "", secret=True, enter="next")
            yield from _row("Repeat password", "again", "", secret=True)
            yield Horizontal(Button("Continue (F10)", id="continue"), classes="buttons")
        yield from self.compose_bottom()

    def on_mount(self) -> None:
        self.query_one("#new", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        # Enter in "new" moves to "again" by itself (FieldInput enter="next"): only "again" submits.
        self.action_next()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.action_next()

    def action_next(self) -> None:
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
        # libcrypt's yescrypt is deliberately slow: hash in a worker; only the hash goes on.
        in_thread(self, lambda: shadow.hash_password(new), self._hashed, group="hash", exclusive=True)

    def _hashed(self, hashed: str) -> None:
        if self.is_active:  # not if the operator went back meanwhile
            self.installer.password_chosen(hashed)


# -- 5 network --------------------------------------------------------------------------------------
class InstallNetworkScreen(NetworkScreen):
    """The console's network form (:class:`qx_console.network_screens.NetworkScreen`), fed with the
    installer's choices instead of the host's stored configuration, and continuing to the confirm step
    instead of applying: the live system's network is not touched (the form's values go to the disk)."""

    KEYS = "Tab Next  Enter Select  F10 Continue  Esc Back"

    def __init__(self, initial: HostConfig) -> None:
        super().__init__()
        self.initial = initial

    def compose_title(self) -> ComposeResult:
        yield Static(f"Quantix OS Installer - Step 5 of {STEPS}: Management network", id="titlebar")

    async def _loaded(self, data: tuple[tuple[HostConfig, Any], list[Any]]) -> None:
        """The form, built by the console's own code from the NICs of this machine (the live system's
        backend lists them) and the installer's settings — not the live system's stored configuration,
        which :meth:`NetworkScreen.on_mount` also reads."""
        _live_config, nics = data
        await super()._loaded(((self.initial, {}), nics))
        self.query_one("#apply", Button).label = "Continue (F10)"

    def action_apply(self) -> None:
        if not self.query("#nic"):
            return  # the form is still loading
        try:
            cfg = self.build()
            validate(cfg)
        except ValidationError as e:
            self.show_errors(e)
            return
        self.show_errors(None)
        self.say("")
        app = self.app
        assert isinstance(app, InstallerApp)
        app.network_chosen(cfg)


# -- 6 confirm --------------------------------------------------------------------------------------
MODE_TEXT = {
    "wipe": "Wipe the disk and install",
    "keep-data": "Reinstall, keep the data partition",
    "upgrade": "Upgrade (inactive slot)",
}


def network_line(cfg: HostConfig) -> str:
    """The management network of ``cfg`` in one line (the confirm screen)."""
    n = cfg.network
    if not n.nic:
        return "DHCP on every wired adapter (factory default)"
    where = n.ifname
    v4 = (f"{n.ipv4.address}/{n.ipv4.prefix}" + (f" via {n.ipv4.gateway}" if n.ipv4.gateway else "")
          if n.ipv4.mode == "static" else "DHCP")
    v6 = {"auto": "", "off": ", no IPv6"}.get(n.ipv6.mode, f", {n.ipv6.address}/{n.ipv6.prefix}")
    dns = f", DNS {', '.join(n.dns)}" if n.dns else ""
    return f"{where}: {v4}{v6}{dns}"


class ConfirmScreen(StepScreen):
    STEP, NAME = 6, "Confirm"
    KEYS = "Tab Next  Enter Press  Esc Back"

    def __init__(self) -> None:
        super().__init__()
        self.plan: Any = None

    @property
    def needs_word(self) -> bool:
        c = self.installer.choices
        return c.mode == "wipe" and c.disk is not None and bool(c.disk.partitions or c.disk.quantix)

    def compose(self) -> ComposeResult:
        c = self.installer.choices
        assert c.disk is not None
        mode = MODE_TEXT[c.mode] + ("" if c.mode != "keep-data" else
                                    ", keep host configuration" if c.keep_config else ", reset host configuration")
        yield from self.compose_title()
        with Vertical(classes="panel") as v:
            v.border_title = "Ready to install"
            lines = [f"Disk: {escape(c.disk.stable_path)}",
                     f"      {escape(c.disk.model or '(no model)')}, {format_size(c.disk.size)}",
                     f"Mode: [b]{escape(mode)}[/b]"]
            if c.host is not None:
                lines.append(escape(console_safe(f"Host: {c.host.hostname}, {network_line(c.host)}"[:74])))
            yield Static("\n".join(lines))
            with VerticalScroll(id="summary"):
                yield Static("Planning...", id="plan")
            if self.needs_word:
                yield from _row(f"Type {WIPE_WORD} to erase", "word", "", placeholder=WIPE_WORD)
            yield Horizontal(Button("Install", id="install", disabled=True), Button("Back", id="cancel"),
                             classes="buttons")
        yield from self.compose_bottom()

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).focus()
        in_thread(self, self.installer.plan_install, self._planned, self._refused, group="plan", exclusive=True)

    def _planned(self, plan: Any) -> None:
        self.plan = plan
        self.query_one("#plan", Static).update("\n".join(escape(str(x)) for x in plan.summary()))
        self.query_one("#install", Button).disabled = False
        (self.query_one("#word", Input) if self.needs_word else self.query_one("#install", Button)).focus()

    def _refused(self, e: BaseException) -> None:
        kind = "Cannot install" if isinstance(e, QxError) else "Planning failed"
        self.query_one("#plan", Static).update(f"[red]{kind}:[/] {escape(describe_error(e))}")
        self.say("Esc goes back to change the choices.", "error")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_next()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "install":
            self.action_next()
        else:
            self.action_back()

    def action_next(self) -> None:
        if self.plan is None or not self.is_active:
            return
        if self.needs_word:
            typed = self.query_one("#word", Input).value.strip()
            if typed.upper() != WIPE_WORD:
                self.query_one("#err-word", Static).update(
                    f"  confirmation: type {WIPE_WORD} - everything on this disk will be erased")
                self.query_one("#word", Input).focus()
                return
        self.installer.start_install(self.plan)


# -- 7 progress, done, failure ----------------------------------------------------------------------
class ProgressScreen(StepScreen):
    """Runs ``job(progress)`` in a thread worker of the app; one bar per engine step. No way back.

    ``steps``: the plan's steps, drawn (waiting) from the start; unattended they appear as they come.
    The outcome goes to :meth:`InstallerApp.install_finished`, which replaces this screen."""

    STEP, NAME = 7, "Installing"
    KEYS = "Installing: please wait, do not switch the server off"

    def __init__(self, job: Callable[[Callable[[Any], None]], Any], *, steps: list[str] | None = None,
                 title: str = "Installing Quantix OS") -> None:
        super().__init__()
        self.job = job
        self.title_text = title
        self.board = ProgressBoard.of(steps)
        self._last: tuple[str, str, int] | None = None

    def compose(self) -> ComposeResult:
        yield from self.compose_title()
        with Vertical(classes="panel") as v:
            v.border_title = self.title_text
            yield Static("Starting...", id="overall")
            yield Static("", id="steps")
            yield Static("", id="now")
        yield from self.compose_bottom()

    def on_mount(self) -> None:
        self._draw()
        # A worker of the app, not of this screen: nothing on the screen stack can cancel an install.
        self.app.run_worker(self._work, thread=True, group="install", exit_on_error=False)

    def _progress(self, p: Any) -> None:
        """Engine thread: hop to the UI only when something visible changed (a step, its message, a
        whole percent) — the engine reports every block it writes."""
        pct = int(100 * p.done / p.size) if p.size else -1
        key = (str(p.step), str(p.message), pct)
        if key != self._last:
            self._last = key
            from_thread(self, self._show, p)

    def _work(self) -> None:
        app = self.installer
        try:
            result, error = self.job(self._progress), None
        except Exception as e:  # noqa: BLE001 - every failure is shown with its step and log
            result, error = None, e
        if error is None:
            from_thread(self, self._complete)
        try:
            app.call_from_thread(app.install_finished, result, error)
        except RuntimeError:  # the app has stopped: nobody to show it to (the log has it)
            pass

    def _show(self, p: Any) -> None:
        self.board.update(p)
        self._draw()

    def _complete(self) -> None:
        self.board.finish()
        self._draw()

    def _draw(self) -> None:
        b = self.board
        rows = []
        for r in b.rows[-12:]:
            frac = r.fraction
            if not r.started:
                bar = "waiting"
            elif frac is None:
                bar = "[" + "." * 30 + "]   ..."
            else:
                bar = text_bar(frac, 30)
            rows.append(f"{escape(console_safe(r.step[:24])):<24} {bar}")
        self.query_one("#steps", Static).update("\n".join(rows))
        cur = b.current
        if cur is not None:
            # The engine's own step number: a followed install (qx-install auto) may skip rows between reads.
            n = cur.index or b.rows.index(cur) + 1
            self.query_one("#overall", Static).update(
                f"Step {n} of {max(b.total, len(b.rows), n)}: {escape(console_safe(cur.step))}")
            self.query_one("#now", Static).update(escape(console_safe(cur.message[:74])))

    def action_back(self) -> None:
        self.say("The installation cannot be interrupted.", "error")


class DoneScreen(StepScreen):
    """Success. Interactive: Enter restarts (the operator removed the medium). Unattended: the answer
    file's ``after`` (reboot / poweroff / none) happens by itself."""

    STEP, NAME = 7, "Installed"
    KEYS = "Enter Restart"
    BINDINGS = [("escape", "back", "Back"), ("enter", "restart", "Restart")]

    def __init__(self, result: Any) -> None:
        super().__init__()
        self.result = result

    def compose(self) -> ComposeResult:
        app = self.installer
        r = self.result
        version = getattr(r, "version", "") or getattr(app.payload, "version", "")
        disk = app.choices.disk
        where = escape(disk.stable_path) if disk is not None else escape(str(getattr(r, "disk", "the disk")))
        slot = getattr(r, "slot", "")
        yield from self.compose_title()
        with Vertical(classes="panel") as v:
            v.border_title = "Installation complete"
            yield Static(f"[green]Quantix OS {escape(str(version))} is installed[/]"
                         + (f" in slot {escape(str(slot).upper())}" if slot else "") + f" on\n{where}.\n\n"
                         "[b]Remove the installation medium and press Enter[/b] to restart the server.\n"
                         "After the restart its console shows the management address.")
        yield from self.compose_bottom()

    def on_mount(self) -> None:
        answer = self.installer.answer
        after = getattr(getattr(answer, "install", None), "after", "none") if answer is not None else "none"
        if after in ("reboot", "poweroff"):
            self._power(after)

    def action_restart(self) -> None:
        self._power("reboot")

    def _power(self, action: str) -> None:
        self.say("Restarting..." if action == "reboot" else "Shutting down...")
        in_thread(self, lambda: self.app.backend.power(action), lambda _: None,
                  lambda e: self.say(f"{action} failed: {describe_error(e)}", "error"), group="power",
                  exclusive=True, what="Restarting")

    def action_back(self) -> None:
        self.say("Quantix OS is installed. Remove the installation medium and press Enter.")


class FailureScreen(StepScreen):
    """The install stopped: the cause, the step and the log (its last lines too)."""

    STEP, NAME = 7, "Installation failed"
    KEYS = "Tab Next  Enter Press"

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error

    def compose(self) -> ComposeResult:
        e = self.error
        step = getattr(e, "step", None)
        log_path = getattr(e, "log_path", None)
        lines = [f"[red]Cause:[/] {escape(describe_error(e))}"]
        lines.append(f"Step:  {escape(str(step))}" if step else "Step:  (before the first step)")
        lines.append(f"Log:   {escape(str(log_path))}" if log_path else "Log:   (none written)")
        if isinstance(e, QxError):
            lines.append("The disk is unchanged or marked incomplete: it does not boot a half-installed system.")
        yield from self.compose_title()
        with Vertical(classes="dialog-error"):
            yield Static("\n".join(lines), id="cause")
            yield Static("", id="log-tail", markup=False)
            again = "Back to disk selection" if self.installer.answer is None else "Install interactively"
            yield Horizontal(Button(again, id="again"), Button("Restart", id="reboot"),
                             Button("Shut down", id="poweroff"), classes="buttons")
        yield from self.compose_bottom()

    def on_mount(self) -> None:
        self.query_one("#again", Button).focus()
        log_path = getattr(self.error, "log_path", None)
        if log_path:
            in_thread(self, lambda: _tail(Path(log_path)), self._show_tail, lambda _: None, group="log")

    def _show_tail(self, lines: list[str]) -> None:
        if lines:
            self.query_one("#log-tail", Static).update("Last lines of the log:\n" + "\n".join(lines))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        bid = str(event.button.id)
        if bid == "again":
            self.installer.start_over()
            return
        self.say("Restarting..." if bid == "reboot" else "Shutting down...")
        in_thread(self, lambda: self.app.backend.power(bid), lambda _: None,
                  lambda e: self.say(describe_error(e), "error"), group="power", exclusive=True)

    def action_back(self) -> None:
        self.say("Choose 'Back to disk selection' to try again.")


def _tail(path: Path, n: int = 6, width: int = 72) -> list[str]:
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 8192))
            text = f.read().decode(errors="replace")
    except OSError:
        return []
    # The log is the engine's, not ours: keep its lines but only characters the console font has.
    clean = [console_safe(ln)[:width] for ln in text.splitlines()]
    return clean[-n:]
