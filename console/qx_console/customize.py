"""Customize: the root-password gate, the menu, and the system screens (password, SSH, logs, services,
updates, reset, power). Network screens live in :mod:`qx_console.network_screens`."""

from __future__ import annotations

from collections.abc import Callable

from rich.markup import escape
from textual.actions import SkipAction
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, OptionList, RichLog, Static
from textual.widgets.option_list import Option

from qx_common.errors import UserError
from qx_console import keyboard, shadow
from qx_console.backend import LOG_SOURCES, NodeCert, ServiceState, BackendUnavailable, UpdateState
from qx_console.hostconfig import check_log_filter, parse_int
from qx_console.network_menu import NetworkMenuScreen
from qx_console.network_screens import BaseScreen, TestNetworkScreen, _row
from qx_console.ui import ConsoleModal, KeyBar, KeyOrder, console_safe, describe_error, from_thread, in_thread, text_bar


class LoginScreen(ConsoleModal[bool]):
    """Asks for the root password; dismisses with True when it is right.

    One check at a time: Enter while a check runs is ignored. Esc during a check closes the dialog;
    the check's answer then arrives for a dialog that is gone and is dropped (it opens nothing)."""

    BINDINGS = [("escape", "cancel", "Cancel")]

    def __init__(self, purpose: str = "Customize system") -> None:
        super().__init__()
        self.purpose = purpose
        self.checking = False
        self._key_hold: int | None = None  # ui.KeyOrder's hold while the password is checked

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog") as v:
            v.border_title = self.purpose
            yield Static("Enter the root password of this host.")
            yield from _row("Root password", "password", "", secret=True)
            yield Static("Enter OK   Esc Cancel", classes="hint")

    def on_mount(self) -> None:
        self.query_one("#password", Input).focus()

    def action_cancel(self) -> None:
        self.close(False)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if self.checking:
            return
        app = self.app
        wait = getattr(app, "login_blocked_until", 0.0) - app.clock() if hasattr(app, "clock") else 0.0
        if wait > 0:
            # Back-off after wrong passwords: not even checked (and so not counted).
            self.query_one("#password", Input).value = ""
            self.query_one("#err-password", Static).update(
                f"  Too many wrong passwords: try again in {wait:.0f} s")
            return
        self.checking = True
        pw = event.value
        be = app.backend
        self.query_one("#err-password", Static).update("  Checking...")
        # The screen changes (or not) only when the check answers: the keys typed behind Enter wait for
        # that answer (ui.KeyOrder), so they reach the Customize menu, or this field again. Esc ends the
        # wait at once: the dialog stays cancellable while the host is slow.
        self._key_hold = app.hold_keys(escape_releases=True) if isinstance(app, KeyOrder) else None
        in_thread(self, lambda: be.verify_root_password(pw), self._checked, self._failed,
                  what="The password check")

    def _release_keys(self) -> None:
        app = self.app
        if isinstance(app, KeyOrder) and self._key_hold is not None:
            app.release_keys(self._key_hold)  # only that hold: a screen change may have taken over
        self._key_hold = None

    def _checked(self, ok: bool) -> None:
        self.checking = False
        app = self.app
        if ok:
            app.failed_logins = 0
            self.close(True)   # the screen change holds the keys on until the menu has its focus
            return
        self._release_keys()
        inp = self.query_one("#password", Input)
        inp.value = ""
        msg = "  root password: incorrect - try again"
        if hasattr(app, "login_backoff"):
            app.failed_logins += 1
            wait = app.login_backoff(app.failed_logins)
            app.login_blocked_until = app.clock() + wait
            if wait > 0:
                msg = f"  root password: incorrect - {app.failed_logins} wrong in a row: wait {wait:.0f} s"
        self.query_one("#err-password", Static).update(msg)

    def _failed(self, e: BaseException) -> None:
        self.checking = False
        self._release_keys()
        self.query_one("#err-password", Static).update(
            escape(f"  root password: cannot be checked: {describe_error(e).splitlines()[0]}"))


class ConfirmScreen(ConsoleModal[bool]):
    BINDINGS = [("escape", "cancel", "Cancel")]

    def __init__(self, title: str, question: str, yes: str = "Yes") -> None:
        super().__init__()
        self._title, self._question, self._yes = title, question, yes

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog") as v:
            v.border_title = self._title
            yield Static(self._question, markup=False)
            yield Horizontal(Button(self._yes, id="yes"), Button("Cancel", id="no"), classes="buttons")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.close(event.button.id == "yes")

    def action_cancel(self) -> None:
        self.close(False)


MENU: list[tuple[str, str]] = [
    ("network", "Configure Management Network"),
    ("restore", "Restore Previous Network Configuration"),
    ("test", "Test Management Network"),
    ("restart", "Restart Management Network"),
    ("password", "Configure Root Password"),
    ("ssh", "SSH Access"),
    ("lockdown", "Lockdown Mode"),
    ("keyboard", "Keyboard Layout"),
    ("support", "Support Bundle"),
    ("nodeapi", "Node API Certificate and Token"),
    ("logs", "View System Logs"),
    ("services", "Services"),
    ("updates", "Updates"),
    ("reset", "Reset System Configuration"),
]


# What each item does, for the description pane beside the menu (the highlighted item's).
DESCRIPTIONS: dict[str, str] = {
    "network": "Adapters, VLAN, IPv4, IPv6, DNS and hostname, applied together with a probe and your "
               "confirmation (reverted by itself otherwise).",
    "restore": "Put back the network configuration that was in use before the last change from this console.",
    "test": "Ping the gateway and DNS servers and resolve a name.",
    "restart": "Restart the management network with the current configuration.",
    "password": "Change the root password (this console, SSH and the node API's login).",
    "ssh": "Turn SSH access on (with an off-timer) or off; shows the host key fingerprints.",
    "lockdown": "SSH off and refused, the node API refuses host configuration changes; only this console "
                "(with the root password) changes the host.",
    "keyboard": "The console keyboard layout (the installer's list): applied at once and at every boot.",
    "support": "Logs, configuration (secrets removed), versions, updates and hardware in one file, on the "
               "data partition and a mounted USB stick.",
    "nodeapi": "The node API's TLS certificate fingerprint and its API token.",
    "logs": "The system journal, the kernel, qx-node and qx-update; filter and follow.",
    "services": "State of the host's services; restart one.",
    "updates": "Installed slots, the update channel; check, apply or roll back an update.",
    "reset": "Put every setting back to the factory default (the network goes back to DHCP).",
}


class CustomizeScreen(BaseScreen):
    TITLE_TEXT = "System Customization"
    HINTS = "Up/Down Select   Enter Open"
    BINDINGS = [("escape", "back", "Log out"), ("f12", "app.power", "Shut down/Restart")]

    def compose(self) -> ComposeResult:
        yield from self.compose_title()
        with Vertical(classes="panel") as v:
            v.border_title = "System Customization"
            yield OptionList(*[Option(label, id=key) for key, label in MENU], id="menu")
            yield Static("", id="describe", classes="describe")
        yield Static("", id="message", classes="hint")
        yield self.keybar()

    def on_mount(self) -> None:
        self.query_one("#menu").focus()

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        self.query_one("#describe", Static).update(DESCRIPTIONS.get(str(event.option.id), ""))

    def on_screen_resume(self) -> None:
        # Also after returning from a sub-screen: a network apply may have created a previous one.
        be = self.app.backend
        in_thread(self, be.has_previous_network, self._previous_known, lambda e: self._previous_known(True),
                  group="previous", exclusive=True)

    def _previous_known(self, has: bool) -> None:
        """"Restore Previous" is offered only when there is a previous configuration to restore."""
        menu = self.query_one("#menu", OptionList)
        idx = menu.get_option_index("restore")
        label = dict(MENU)["restore"]
        # Said in words too: the Linux console may not show a greyed-out line as different.
        menu.replace_option_prompt_at_index(idx, label if has else f"{label} (none kept)")
        if has:
            menu.enable_option_at_index(idx)
        else:
            menu.disable_option_at_index(idx)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.say("")
        self.open(str(event.option.id))

    def open(self, key: str) -> None:
        be = self.app.backend
        screens: dict[str, Callable[[], BaseScreen]] = {
            "network": NetworkMenuScreen, "test": TestNetworkScreen, "password": PasswordScreen, "ssh": SshScreen,
            "logs": LogsScreen, "services": ServicesScreen, "updates": UpdatesScreen, "reset": ResetScreen,
            "nodeapi": NodeApiScreen, "lockdown": LockdownScreen, "keyboard": KeyboardScreen,
            "support": SupportScreen,
        }
        if key in screens:
            self.app.push_screen(screens[key]())
        elif key == "restore":
            self._confirm_then("Restore", "Put the previous network configuration back and apply it?",
                               be.restore_previous_network, "Previous network configuration restored.")
        elif key == "restart":
            self._confirm_then("Restart", "Restart the management network? Connections may drop briefly.",
                               be.restart_network, "Management network restarted.")

    def _confirm_then(self, title: str, question: str, fn: Callable[[], None], ok: str) -> None:
        def answered(yes: bool | None) -> None:
            if yes:
                self.say(f"{title}: working...")
                in_thread(self, fn, lambda _: (self.say(ok, "ok"), self.on_screen_resume()),
                          lambda e: self.say(f"{title} failed: {describe_error(e)}", "error"), what=title)
        self.app.push_screen(ConfirmScreen(title, question, title), answered)


class PasswordScreen(BaseScreen):
    TITLE_TEXT = "Configure Root Password"

    def compose(self) -> ComposeResult:
        yield from self.compose_title()
        with Vertical(classes="panel") as v:
            v.border_title = "Root password"
            yield from _row("New password", "new", "", secret=True, enter="next")
            yield from _row("Confirm password", "again", "", secret=True)
            yield Horizontal(Button("Set password", id="set"), classes="buttons")
        yield Static("", id="message", classes="hint")
        yield self.keybar()

    def on_mount(self) -> None:
        self.query_one("#new").focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        # Enter in "new" moves to "again" by itself (FieldInput enter="next"): only "again" submits.
        self.apply()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.apply()

    def apply(self) -> None:
        new, again = self.query_one("#new", Input).value, self.query_one("#again", Input).value
        self.field_error("new", None)
        self.field_error("again", None)
        self.say("")
        try:
            shadow.check_new_password(new, again)
        except UserError as e:
            wid = "again" if e.message.startswith("confirm") else "new"
            self.field_error(wid, f"{e.message} - {e.hint}")
            return
        self.say("Changing the root password...")
        in_thread(self, lambda: self.app.backend.set_root_password(new), self._changed,
                  lambda e: self.say(f"Not changed: {describe_error(e)}", "error"), what="Changing the root password")

    def _changed(self, _: None) -> None:
        for wid in ("new", "again"):
            self.query_one(f"#{wid}", Input).value = ""
        self.say("Root password changed.", "ok")


class SshScreen(BaseScreen):
    TITLE_TEXT = "SSH Access"

    def compose(self) -> ComposeResult:
        yield from self.compose_title()
        with Vertical(classes="panel") as v:
            v.border_title = "SSH"
            yield Static("SSH: ...", id="state")
            yield from _row("Turn off after (min)", "timeout", "60")
            yield Horizontal(Button("Enable SSH", id="on"), Button("Disable SSH", id="off"), classes="buttons")
            yield Static("Host key fingerprints:", classes="hint")
            yield Static("", id="fingerprints")
        yield Static("", id="message", classes="hint")
        yield self.keybar()

    def on_mount(self) -> None:
        self.refresh_state()

    def refresh_state(self) -> None:
        be = self.app.backend
        in_thread(self, lambda: (be.ssh_state(), be.ssh_fingerprints(), be.load_config()[0]), self._show)

    def _show(self, data: tuple[ServiceState, list[str], object]) -> None:
        st, fps, cfg = data
        self.query_one("#state", Static).update(
            f"SSH service: [b]{escape(console_safe(st.active))}[/b] ({escape(console_safe(st.detail))})")
        self.query_one("#timeout", Input).value = str(cfg.ssh.timeout_min)  # type: ignore[attr-defined]
        self.query_one("#fingerprints", Static).update(
            "\n".join(escape(console_safe(f)) for f in fps) or "(no host keys generated yet)")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        from qx_console.hostconfig import check_ssh_timeout

        on = event.button.id == "on"
        self.field_error("timeout", None)
        self.say("")
        # Empty is an error, not "never": SSH left on by accident is the risk this timer exists for.
        minutes, err = parse_int(self.query_one("#timeout", Input).value, "ssh.timeout_min",
                                 "use minutes from 1 to 1440, or 0 to keep SSH on until turned off")
        if err is None and minutes is not None:
            err = check_ssh_timeout(minutes)
        if err is not None or minutes is None:
            self.field_error("timeout", err)
            return
        self.say("Enabling SSH..." if on else "Disabling SSH...")
        in_thread(self, lambda: self.app.backend.set_ssh(on, minutes),
                  lambda _: (self.say("SSH enabled." if on else "SSH disabled.", "ok"), self.refresh_state()),
                  lambda e: self.say(f"Not changed: {describe_error(e)}", "error"),
                  what="Enabling SSH" if on else "Disabling SSH")


class LockdownScreen(BaseScreen):
    """Lockdown mode on or off. Switching asks for the root password again (a Customize session left
    open must not be enough to open the host to SSH and the API)."""

    TITLE_TEXT = "Lockdown Mode"
    HINTS = "Enter Switch"

    def __init__(self) -> None:
        super().__init__()
        self.on: bool | None = None  # None: not read yet

    def compose(self) -> ComposeResult:
        yield from self.compose_title()
        with Vertical(classes="panel") as v:
            v.border_title = "Lockdown mode"
            yield Static("Lockdown mode: ...", id="state")
            yield Static("While it is on, SSH is stopped and cannot be turned on, and the node API refuses "
                         "changes of the host's configuration (HTTP 423). This console still works.",
                         classes="hint")
            yield Horizontal(Button("Turn lockdown on", id="switch"), classes="buttons")
        yield Static("", id="message", classes="hint")
        yield self.keybar()

    def on_mount(self) -> None:
        self.query_one("#switch", Button).focus()
        self.refresh_state()

    def refresh_state(self) -> None:
        in_thread(self, self.app.backend.lockdown, self._show, group="state", exclusive=True)

    def _show(self, on: bool) -> None:
        self.on = on
        self.query_one("#state", Static).update(f"Lockdown mode: [b]{'ON' if on else 'off'}[/b]")
        self.query_one("#switch", Button).label = "Turn lockdown off" if on else "Turn lockdown on"

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if self.on is None:
            return  # still reading the state
        want = not self.on

        def answered(ok: bool | None) -> None:
            if not ok:
                self.say("Not changed.")
                return
            self.say("Turning lockdown mode on..." if want else "Turning lockdown mode off...")
            in_thread(self, lambda: self.app.backend.set_lockdown(want),
                      lambda _: (self.say("Lockdown mode is on: SSH stopped, API changes refused." if want
                                          else "Lockdown mode is off (SSH stays off until turned on).", "ok"),
                                 self.refresh_state()),
                      lambda e: self.say(f"Not changed: {describe_error(e)}", "error"),
                      what="Switching lockdown mode")
        self.app.push_screen(LoginScreen("Lockdown mode"), answered)


class KeyboardScreen(BaseScreen):
    """The console keyboard layout: Enter on a layout stores it and loads it at once."""

    TITLE_TEXT = "Keyboard Layout"
    HINTS = "Up/Down Select   Enter Apply"

    def compose(self) -> ComposeResult:
        yield from self.compose_title()
        with Vertical(classes="panel") as v:
            v.border_title = "Keyboard layout"
            yield Static("Layout: ...", id="current")
            yield OptionList(*[Option(f"{name:<4} {desc}", id=name) for name, desc in keyboard.LAYOUTS.items()],
                             id="layouts")
        yield Static("", id="message", classes="hint")
        yield self.keybar()

    def on_mount(self) -> None:
        self.query_one("#layouts").focus()
        in_thread(self, self.app.backend.keyboard_layout, self._show, group="layout", exclusive=True)

    def _show(self, name: str) -> None:
        self.query_one("#current", Static).update(
            escape(f"Layout: {keyboard.LAYOUTS.get(name, name)} ({name})"))
        if name in keyboard.LAYOUTS:
            self.query_one("#layouts", OptionList).highlighted = list(keyboard.LAYOUTS).index(name)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        name = str(event.option.id)
        self.say(f"Applying {name}...")

        def done(note: str | None) -> None:
            self._show(name)
            if note:
                self.say(f"Stored for the next boots; not loaded now: {console_safe(note)}", "error")
            else:
                self.say(f"Keyboard layout {name} applied.", "ok")
        in_thread(self, lambda: self.app.backend.set_keyboard_layout(name), done,
                  lambda e: self.say(f"Not changed: {describe_error(e)}", "error"),
                  group="set", exclusive=True, what="Setting the keyboard layout")


class SupportScreen(BaseScreen):
    """Creates a support bundle (qx_console.support) and says where it went."""

    TITLE_TEXT = "Support Bundle"
    HINTS = "Enter Create"

    def __init__(self) -> None:
        super().__init__()
        self.running = False

    def compose(self) -> ComposeResult:
        yield from self.compose_title()
        with Vertical(classes="panel") as v:
            v.border_title = "Support bundle"
            yield Static("Logs, configuration with passwords, keys and tokens removed, versions, slot and "
                         "update state and the hardware inventory, in one .tar.zst file. Insert and mount a "
                         "USB stick first to get a copy on it.", classes="hint")
            yield Horizontal(Button("Create support bundle", id="create"), classes="buttons")
            yield Static("", id="result")
        yield Static("", id="message", classes="hint")
        yield self.keybar()

    def on_mount(self) -> None:
        self.query_one("#create", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if self.running:
            return  # one bundle at a time
        self.running = True
        self.query_one("#result", Static).update("")
        self.say("Collecting logs and configuration (this can take a minute)...")

        def done(summary: str) -> None:
            self.running = False
            self.say("Support bundle written.", "ok")
            self.query_one("#result", Static).update(escape(console_safe(summary)))

        def failed(e: BaseException) -> None:
            self.running = False
            self.say(f"Not written: {describe_error(e)}", "error")
        in_thread(self, self.app.backend.support_bundle, done, failed, what="Writing the support bundle")


class NodeApiScreen(BaseScreen):
    """qx-node's TLS certificate fingerprint (to check a client's first connection) and its API token,
    which stays hidden until the operator asks for it (it grants full control of this host)."""

    TITLE_TEXT = "Node API Certificate and Token"
    HINTS = "Tab Next   Enter Press"
    HIDDEN = "API token: hidden (whoever reads it can manage this host)."

    def compose(self) -> ComposeResult:
        yield from self.compose_title()
        with Vertical(classes="panel") as v:
            v.border_title = "qx-node API (HTTPS, port 8443)"
            yield Static("Reading the certificate...", id="cert")
            yield Static(self.HIDDEN, id="token")
            yield Horizontal(Button("Show token", id="show"), Button("Hide token", id="hide"), classes="buttons")
        yield Static("", id="message", classes="hint")
        yield self.keybar()

    def on_mount(self) -> None:
        in_thread(self, self.app.backend.node_certificate, self._show_cert, self._no_cert)
        self.query_one("#show", Button).focus()

    def _show_cert(self, cert: NodeCert) -> None:
        lines = ["TLS certificate SHA-256 fingerprint (compare with what the client shows):"]
        lines += [f"  [b]{escape(part)}[/b]" for part in cert.fingerprint_lines()]
        lines.append(f"Names: {escape((', '.join(cert.names) or '(none)')[:66])}")
        lines.append(f"Valid until: {escape(cert.not_after or '?')}")
        self.query_one("#cert", Static).update("\n".join(lines))

    def _no_cert(self, e: BaseException) -> None:
        kind = "Not available" if isinstance(e, BackendUnavailable) else "Error"
        self.query_one("#cert", Static).update(f"[yellow]TLS certificate: {kind}:[/] {escape(describe_error(e))}")

    def on_screen_suspend(self) -> None:
        # A dialog (F12) covers the screen: the token does not stay on display behind it.
        self.query_one("#token", Static).update(self.HIDDEN)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        token = self.query_one("#token", Static)
        if event.button.id == "hide":
            self.workers.cancel_group(self, "token")  # a token still being read is not shown after Hide
            token.update(self.HIDDEN)
            return
        in_thread(self, self.app.backend.node_api_token,
                  lambda t: token.update(f"API token: [b]{escape(console_safe(t))}[/b]\n"
                                         "Send it as the header 'Authorization: Bearer <token>'."),
                  lambda e: token.update(f"[red]API token:[/] {escape(describe_error(e))}"),
                  group="token", exclusive=True)


class LogsScreen(BaseScreen):
    TITLE_TEXT = "System Logs"
    # "/" moves focus: a priority binding, so the filter typed right after it lands in the filter field.
    BINDINGS = [("s", "source", "Source"), ("f", "follow", "Follow"),
                Binding("slash", "filter", "Filter", priority=True), ("escape", "back", "Back")]

    def __init__(self) -> None:
        super().__init__()
        self.source = LOG_SOURCES[0]
        self.follow = False

    def compose(self) -> ComposeResult:
        yield from self.compose_title()
        yield Static("", id="logstate")
        yield from _row("Filter", "grep", "", enter="submit+next")  # Enter: filter, then the log
        yield RichLog(id="log", wrap=False, markup=False, max_lines=2000)
        yield Static("", id="message", classes="hint")
        yield self.keybar()

    def on_mount(self) -> None:
        self.load()
        self.set_interval(2.0, self._follow_tick)
        self.query_one("#log").focus()

    def _state(self) -> None:
        self.query_one("#logstate", Static).update(
            f"Source: [b]{self.source}[/b]   Follow: {'on' if self.follow else 'off'}")

    def load(self) -> None:
        self._state()
        src, grep = self.source, self.query_one("#grep", Input).value.strip()
        err = check_log_filter(grep)
        self.field_error("grep", err)
        if err:
            # Not "(no entries)": the filter is wrong, not the journal empty.
            self.query_one("#log", RichLog).clear()
            self.say("Filter not applied: correct it (or empty it for all entries).", "error")
            return
        self.say("")
        in_thread(self, lambda: self.app.backend.logs(src, grep), self._show, self._failed,
                  group="logs", exclusive=True)

    def _failed(self, e: BaseException) -> None:
        self.query_one("#log", RichLog).clear()
        self.say(f"Logs not read: {describe_error(e)}", "error")

    def _show(self, lines: list[str]) -> None:
        log = self.query_one("#log", RichLog)
        log.clear()
        log.write(console_safe("\n".join(lines)) if lines else
                  "(no entries match the filter)" if self.query_one("#grep", Input).value.strip() else "(no entries)")

    def _follow_tick(self) -> None:
        if self.follow:
            self.load()

    def action_source(self) -> None:
        self.source = LOG_SOURCES[(LOG_SOURCES.index(self.source) + 1) % len(LOG_SOURCES)]
        self.load()

    def action_follow(self) -> None:
        self.follow = not self.follow
        self.load()

    def action_filter(self) -> None:
        if isinstance(self.focused, Input):
            raise SkipAction()  # a '/' typed into the filter itself
        self.set_focus(self.query_one("#grep"))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.load()  # the focus is on the log already (the filter's enter="submit+next")


class ServicesScreen(BaseScreen):
    TITLE_TEXT = "Services"
    HINTS = "Enter Restart selected service"

    def compose(self) -> ComposeResult:
        yield from self.compose_title()
        with Vertical(classes="panel") as v:
            v.border_title = "Services"
            yield OptionList(id="services")
        yield Static("", id="message", classes="hint")
        yield self.keybar()

    def on_mount(self) -> None:
        self.load()
        self.query_one("#services").focus()

    def load(self) -> None:
        in_thread(self, self.app.backend.services, self._show, group="services", exclusive=True)

    def _show(self, states: list[ServiceState]) -> None:
        ol = self.query_one("#services", OptionList)
        hl = ol.highlighted
        ol.clear_options()
        ol.add_options([Option(escape(console_safe(f"{s.name:<20} {s.active:<10} {s.detail}")), id=s.name)
                        for s in states])
        ol.highlighted = hl if hl is not None else 0

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        name = str(event.option.id)

        def answered(yes: bool | None) -> None:
            if yes:
                self.say(f"Restarting {name}...")
                in_thread(self, lambda: self.app.backend.restart_service(name),
                          lambda _: (self.say(f"{name} restarted.", "ok"), self.load()),
                          lambda e: (self.say(f"{name} not restarted: {describe_error(e)}", "error"), self.load()),
                          what=f"Restarting {name}")
        self.say("")
        self.app.push_screen(ConfirmScreen("Restart", f"Restart {name}?", "Restart"), answered)


class UpdatesScreen(BaseScreen):
    TITLE_TEXT = "Updates"
    HINTS = "Tab Next   Enter Press"

    def compose(self) -> ComposeResult:
        yield from self.compose_title()
        with Vertical(classes="panel") as v:
            v.border_title = "Updates (qx-update)"
            yield Static("Reading update status...", id="slots")
            yield from _row("Channel", "channel", "")
            # Short labels: the four buttons fit a 60-column terminal.
            yield Horizontal(Button("Check", id="check"), Button("Apply", id="apply"),
                             Button("Roll back", id="rollback"), Button("Set channel", id="setchannel"),
                             classes="buttons")
            yield Static("", id="progress")
        yield Static("", id="message", classes="hint")
        yield self.keybar()

    def on_mount(self) -> None:
        self.reload()

    def reload(self) -> None:
        """Read qx-update's state again (after every action: the slot table never shows stale state)."""
        in_thread(self, self.app.backend.update_status, self._show, self._unavailable,
                  group="update-status", exclusive=True)

    def _unavailable(self, e: BaseException) -> None:
        kind = "Not available" if isinstance(e, BackendUnavailable) else "Error"
        self.query_one("#slots", Static).update(f"[yellow]{kind}:[/] {escape(describe_error(e))}\n"
                                                "Updates cannot be checked or applied from this console now.")
        for b in self.query(Button):
            b.disabled = True
        self.query_one("#channel", Input).disabled = True

    def _show(self, st: UpdateState) -> None:
        rows = ["Slot  Version      State"]
        for s in st.slots:
            state = ("[b]active[/b]" if s.active else "standby") + (
                ", good" if s.blessed else ", bad" if s.bad else ", on trial" if s.blessed is False else "")
            rows.append(f" {s.name.upper():<4} {escape(s.version or '(empty)'):<12} {state}")
        if st.pending:
            rows.append(f"Installed, waiting for a reboot: {escape(st.pending)}")
        if st.available:
            rows.append(f"Available: {escape(st.available)}")
        elif not st.pending:
            rows.append({"up-to-date": "Up to date (last check).", "error": "The last check failed (Check now)."}
                        .get(st.last_check, "No update known (Check now)."))
        self.query_one("#slots", Static).update("\n".join(rows))
        self.query_one("#channel", Input).value = st.channel

    def on_button_pressed(self, event: Button.Pressed) -> None:
        be = self.app.backend
        bid = event.button.id
        names = {"check": "Check", "setchannel": "Set channel", "apply": "Apply update", "rollback": "Roll back"}
        what = names.get(str(bid), str(bid))

        def fail(e: BaseException) -> None:
            self.say(f"{what} failed: {describe_error(e)}", "error")
            self.reload()

        def ok(msg: str) -> None:
            self.say(msg, "ok")
            self.reload()

        self.field_error("channel", None)
        self.say("")
        if bid == "check":
            self.say("Checking...")
            in_thread(self, be.update_check, lambda st: (self._show(st), self.say("Check done.", "ok")), fail,
                      what=what)
        elif bid == "setchannel":
            name = self.query_one("#channel", Input).value.strip()
            in_thread(self, lambda: be.set_channel(name), lambda _: ok(f"Channel set to {name}."),
                      lambda e: self.field_error("channel", describe_error(e).replace("\nHint: ", " - ")), what=what)
        elif bid == "apply":
            def progress(frac: float, msg: str) -> None:
                # From qx-update's thread; dropped once the operator left (the apply goes on).
                from_thread(self, self._progress, frac, msg)
            self.say("Applying update...")
            in_thread(self, lambda: be.update_apply(progress), ok, fail, what=what)
        elif bid == "rollback":
            def answered(yes: bool | None) -> None:
                if yes:
                    in_thread(self, be.update_rollback, ok, fail, what=what)
            self.app.push_screen(ConfirmScreen("Roll back", "Boot the other slot at the next restart?",
                                               "Roll back"), answered)


    def _progress(self, frac: float, msg: str) -> None:
        self.query_one("#progress", Static).update(escape(console_safe(f"{text_bar(frac)} {msg}"[:76])))


class ResetScreen(BaseScreen):
    TITLE_TEXT = "Reset System Configuration"

    def compose(self) -> ComposeResult:
        yield from self.compose_title()
        with Vertical(classes="panel") as v:
            v.border_title = "Reset to factory defaults"
            yield Static("This removes the hostname, network, SSH and update settings stored on the data "
                         "partition. Virtual machines are kept. Type this host's name to confirm:")
            yield Static("", id="expect")
            yield from _row("Hostname", "confirm", "")
            yield Horizontal(Button("Reset", id="reset", disabled=True), classes="buttons")
        yield Static("", id="message", classes="hint")
        yield self.keybar()

    hostname: str | None = None  # the name to type; None while it is read (Reset stays disabled)
    busy = False  # a reset runs: no second one

    def on_mount(self) -> None:
        self.load()

    def load(self) -> None:
        in_thread(self, lambda: self.app.backend.load_config()[0].hostname, self._expect, group="name",
                  exclusive=True)

    def _expect(self, name: str) -> None:
        self.hostname = name
        self.query_one("#expect", Static).update(f"  [b]{escape(console_safe(name))}[/b]")
        self.query_one("#confirm", Input).value = ""
        self.query_one("#reset", Button).disabled = False
        self.query_one("#confirm").focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.reset()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.reset()

    def reset(self) -> None:
        if self.busy or self.hostname is None:
            return
        typed = self.query_one("#confirm", Input).value.strip()
        self.say("")
        if typed != self.hostname:
            self.field_error("confirm", "hostname: does not match - type the name shown above")
            return
        self.field_error("confirm", None)
        self.busy = True
        self.query_one("#reset", Button).disabled = True
        self.say("Resetting...")
        in_thread(self, self.app.backend.reset_config, self._done, self._failed, what="Reset")

    def _done(self, _: None) -> None:
        # The old name is no longer this host's: show the new one (a second reset must type it).
        self.busy, self.hostname = False, None
        self.query_one("#expect", Static).update("")
        self.query_one("#confirm", Input).value = ""
        self.say("Configuration reset to defaults.", "ok")
        self.load()

    def _failed(self, e: BaseException) -> None:
        self.busy = False
        self.query_one("#reset", Button).disabled = False
        self.say(f"Reset failed: {describe_error(e)}", "error")


class PowerScreen(ConsoleModal[None]):
    BINDINGS = [("escape", "cancel", "Cancel")]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog") as v:
            v.border_title = "Shut down / Restart"
            yield Static("Running virtual machines are shut down first by the host.")
            yield Horizontal(Button("Restart", id="reboot"), Button("Shut down", id="poweroff"),
                             Button("Cancel", id="cancel"), classes="buttons")
            yield Static("", id="message", classes="hint")

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        action = str(event.button.id)
        if action == "cancel":
            self.close(None)
            return
        self.query_one("#message", Static).update("Restarting..." if action == "reboot" else "Shutting down...")
        in_thread(self, lambda: self.app.backend.power(action), lambda _: None,
                  lambda e: self.query_one("#message", Static).update(f"[red]{escape(describe_error(e))}[/]"),
                  what="Restart" if action == "reboot" else "Shut down")

    def action_cancel(self) -> None:
        self.close(None)
