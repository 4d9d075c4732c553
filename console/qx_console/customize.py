"""Customize: the root-password gate, the menu, and the system screens (password, SSH, logs, services,
updates, reset, power). Network screens live in :mod:`qx_console.network_screens`."""

from __future__ import annotations

from collections.abc import Callable

from rich.markup import escape
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, OptionList, RichLog, Static
from textual.widgets.option_list import Option

from qx_common.errors import UserError
from qx_console import shadow
from qx_console.backend import LOG_SOURCES, NodeCert, ServiceState, Unavailable, UpdateState
from qx_console.network_screens import BaseScreen, NetworkScreen, TestNetworkScreen, _row
from qx_console.ui import KeyBar, describe_error, in_thread, text_bar


class LoginScreen(ModalScreen[bool]):
    """Asks for the root password; dismisses with True when it is right."""

    BINDINGS = [("escape", "cancel", "Cancel")]

    def __init__(self, purpose: str = "Customize system") -> None:
        super().__init__()
        self.purpose = purpose

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog") as v:
            v.border_title = self.purpose
            yield Static("Enter the root password of this host.")
            yield from _row("Root password", "password", "", secret=True)
            yield Static("Enter OK   Esc Cancel", classes="hint")

    def on_mount(self) -> None:
        self.query_one("#password", Input).focus()

    def action_cancel(self) -> None:
        self.dismiss(False)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        pw = event.value
        be = self.app.backend
        in_thread(self, lambda: be.verify_root_password(pw), self._checked)

    def _checked(self, ok: bool) -> None:
        if ok:
            self.dismiss(True)
        else:
            inp = self.query_one("#password", Input)
            inp.value = ""
            self.query_one("#err-password", Static).update("  root password: incorrect - try again")


class ConfirmScreen(ModalScreen[bool]):
    BINDINGS = [("escape", "cancel", "Cancel")]

    def __init__(self, title: str, question: str, yes: str = "Yes") -> None:
        super().__init__()
        self._title, self._question, self._yes = title, question, yes

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog") as v:
            v.border_title = self._title
            yield Static(self._question)
            yield Horizontal(Button(self._yes, id="yes"), Button("Cancel", id="no"), classes="buttons")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_cancel(self) -> None:
        self.dismiss(False)


MENU: list[tuple[str, str]] = [
    ("network", "Configure Management Network"),
    ("restore", "Restore Previous Network Configuration"),
    ("test", "Test Management Network"),
    ("restart", "Restart Management Network"),
    ("password", "Configure Root Password"),
    ("ssh", "SSH Access"),
    ("nodeapi", "Node API Certificate and Token"),
    ("logs", "View System Logs"),
    ("services", "Services"),
    ("updates", "Updates"),
    ("reset", "Reset System Configuration"),
]


class CustomizeScreen(BaseScreen):
    TITLE_TEXT = "System Customization"
    KEYS = "Up/Down Select   Enter Open   Esc Log out   F12 Shut down/Restart"
    BINDINGS = [("escape", "back", "Back"), ("f12", "app.power", "Power")]

    def compose(self) -> ComposeResult:
        yield from self.compose_title()
        with Vertical(classes="panel") as v:
            v.border_title = "System Customization"
            yield OptionList(*[Option(label, id=key) for key, label in MENU], id="menu")
        yield Static("", id="message", classes="hint")
        yield self.keybar()

    def on_mount(self) -> None:
        self.query_one("#menu").focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.open(str(event.option.id))

    def open(self, key: str) -> None:
        be = self.app.backend
        screens: dict[str, Callable[[], BaseScreen]] = {
            "network": NetworkScreen, "test": TestNetworkScreen, "password": PasswordScreen, "ssh": SshScreen,
            "logs": LogsScreen, "services": ServicesScreen, "updates": UpdatesScreen, "reset": ResetScreen,
            "nodeapi": NodeApiScreen,
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
                in_thread(self, fn, lambda _: self.say(ok, "ok"),
                          lambda e: self.say(f"{title} failed: {e}", "error"))
        self.app.push_screen(ConfirmScreen(title, question, title), answered)


class PasswordScreen(BaseScreen):
    TITLE_TEXT = "Configure Root Password"

    def compose(self) -> ComposeResult:
        yield from self.compose_title()
        with Vertical(classes="panel") as v:
            v.border_title = "Root password"
            yield from _row("New password", "new", "", secret=True)
            yield from _row("Confirm password", "again", "", secret=True)
            yield Horizontal(Button("Set password", id="set"), classes="buttons")
        yield Static("", id="message", classes="hint")
        yield self.keybar()

    def on_mount(self) -> None:
        self.query_one("#new").focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "again":
            self.apply()
        else:
            self.focus_next()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.apply()

    def apply(self) -> None:
        new, again = self.query_one("#new", Input).value, self.query_one("#again", Input).value
        self.query_one("#err-new", Static).update("")
        self.query_one("#err-again", Static).update("")
        try:
            shadow.check_new_password(new, again)
        except UserError as e:
            wid = "again" if e.message.startswith("confirm") else "new"
            self.query_one(f"#err-{wid}", Static).update(f"  {e.message} - {e.hint}")
            return
        in_thread(self, lambda: self.app.backend.set_root_password(new),
                  lambda _: self.say("Root password changed.", "ok"))


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
        self.query_one("#state", Static).update(f"SSH service: [b]{st.active}[/b] ({st.detail})")
        self.query_one("#timeout", Input).value = str(cfg.ssh.timeout_min)  # type: ignore[attr-defined]
        self.query_one("#fingerprints", Static).update(
            "\n".join(escape(f) for f in fps) or "(no host keys generated yet)")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        on = event.button.id == "on"
        raw = self.query_one("#timeout", Input).value.strip() or "0"
        self.query_one("#err-timeout", Static).update("")
        if not raw.isdigit() or not 0 <= int(raw) <= 1440:
            self.query_one("#err-timeout", Static).update(
                "  ssh.timeout_min: not a number of minutes - use 1-1440, or 0 to keep SSH on")
            return
        in_thread(self, lambda: self.app.backend.set_ssh(on, int(raw)),
                  lambda _: (self.say("SSH enabled." if on else "SSH disabled.", "ok"), self.refresh_state()))


class NodeApiScreen(BaseScreen):
    """qx-node's TLS certificate fingerprint (to check a client's first connection) and its API token,
    which stays hidden until the operator asks for it (it grants full control of this host)."""

    TITLE_TEXT = "Node API Certificate and Token"
    KEYS = "Tab Next  Enter Press  Esc Back"
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
        kind = "Not available" if isinstance(e, Unavailable) else "Error"
        self.query_one("#cert", Static).update(f"[yellow]TLS certificate: {kind}:[/] {escape(describe_error(e))}")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        token = self.query_one("#token", Static)
        if event.button.id == "hide":
            token.update(self.HIDDEN)
            return
        in_thread(self, self.app.backend.node_api_token,
                  lambda t: token.update(f"API token: [b]{escape(t)}[/b]\n"
                                         "Send it as the header 'Authorization: Bearer <token>'."),
                  lambda e: token.update(f"[red]API token:[/] {escape(describe_error(e))}"))


class LogsScreen(BaseScreen):
    TITLE_TEXT = "System Logs"
    KEYS = "S Source  F Follow  / Filter  Esc Back"
    BINDINGS = [("escape", "back", "Back"), ("s", "source", "Source"), ("f", "follow", "Follow"),
                ("slash", "filter", "Filter")]

    def __init__(self) -> None:
        super().__init__()
        self.source = LOG_SOURCES[0]
        self.follow = False

    def compose(self) -> ComposeResult:
        yield from self.compose_title()
        yield Static("", id="logstate")
        yield from _row("Filter", "grep", "")
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
        in_thread(self, lambda: self.app.backend.logs(src, grep), self._show, group="logs", exclusive=True)

    def _show(self, lines: list[str]) -> None:
        log = self.query_one("#log", RichLog)
        log.clear()
        log.write("\n".join(lines) if lines else "(no entries)")

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
        self.query_one("#grep").focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.load()
        self.query_one("#log").focus()


class ServicesScreen(BaseScreen):
    TITLE_TEXT = "Services"
    KEYS = "Enter Restart selected service   Esc Back"

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
        in_thread(self, self.app.backend.services, self._show)

    def _show(self, states: list[ServiceState]) -> None:
        ol = self.query_one("#services", OptionList)
        hl = ol.highlighted
        ol.clear_options()
        ol.add_options([Option(f"{s.name:<20} {s.active:<10} {s.detail}", id=s.name) for s in states])
        ol.highlighted = hl if hl is not None else 0

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        name = str(event.option.id)

        def answered(yes: bool | None) -> None:
            if yes:
                in_thread(self, lambda: self.app.backend.restart_service(name),
                          lambda _: (self.say(f"{name} restarted.", "ok"), self.load()))
        self.app.push_screen(ConfirmScreen("Restart", f"Restart {name}?", "Restart"), answered)


class UpdatesScreen(BaseScreen):
    TITLE_TEXT = "Updates"
    KEYS = "Tab Next  Enter Press  Esc Back"

    def compose(self) -> ComposeResult:
        yield from self.compose_title()
        with Vertical(classes="panel") as v:
            v.border_title = "Updates (qx-update)"
            yield Static("Reading update status...", id="slots")
            yield from _row("Channel", "channel", "")
            yield Horizontal(Button("Check now", id="check"), Button("Apply update", id="apply"),
                             Button("Roll back", id="rollback"), Button("Set channel", id="setchannel"),
                             classes="buttons")
            yield Static("", id="progress")
        yield Static("", id="message", classes="hint")
        yield self.keybar()

    def on_mount(self) -> None:
        in_thread(self, self.app.backend.update_status, self._show, self._unavailable)

    def _unavailable(self, e: BaseException) -> None:
        kind = "Not available" if isinstance(e, Unavailable) else "Error"
        self.query_one("#slots", Static).update(f"[yellow]{kind}:[/] {escape(str(e))}\n"
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
        fail = lambda e: self.say(f"{bid}: {e}", "error")  # noqa: E731
        if bid == "check":
            self.say("Checking...")
            in_thread(self, be.update_check, lambda st: (self._show(st), self.say("Check done.", "ok")), fail)
        elif bid == "setchannel":
            name = self.query_one("#channel", Input).value.strip()
            in_thread(self, lambda: be.set_channel(name), lambda _: self.say(f"Channel set to {name}.", "ok"),
                      lambda e: self.query_one("#err-channel", Static).update(f"  {e}"))
        elif bid == "apply":
            def progress(frac: float, msg: str) -> None:
                self.app.call_from_thread(self.query_one("#progress", Static).update,
                                          f"{text_bar(frac)} {escape(msg)}"[:76])
            self.say("Applying update...")
            in_thread(self, lambda: be.update_apply(progress), lambda m: self.say(m, "ok"), fail)
        elif bid == "rollback":
            def answered(yes: bool | None) -> None:
                if yes:
                    in_thread(self, be.update_rollback, lambda m: self.say(m, "ok"), fail)
            self.app.push_screen(ConfirmScreen("Roll back", "Boot the other slot at the next restart?",
                                               "Roll back"), answered)


class ResetScreen(BaseScreen):
    TITLE_TEXT = "Reset System Configuration"

    def compose(self) -> ComposeResult:
        yield from self.compose_title()
        with Vertical(classes="panel") as v:
            v.border_title = "Reset to factory defaults"
            yield Static("This removes the hostname, network, SSH and update settings stored on the data\n"
                         "partition. Virtual machines are kept. Type this host's name to confirm:")
            yield Static("", id="expect")
            yield from _row("Hostname", "confirm", "")
            yield Horizontal(Button("Reset", id="reset"), classes="buttons")
        yield Static("", id="message", classes="hint")
        yield self.keybar()

    def on_mount(self) -> None:
        in_thread(self, lambda: self.app.backend.load_config()[0].hostname, self._expect)

    def _expect(self, name: str) -> None:
        self.hostname = name
        self.query_one("#expect", Static).update(f"  [b]{escape(name)}[/b]")
        self.query_one("#confirm").focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.reset()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.reset()

    def reset(self) -> None:
        typed = self.query_one("#confirm", Input).value.strip()
        if typed != getattr(self, "hostname", None):
            self.query_one("#err-confirm", Static).update("  hostname: does not match - type the name shown above")
            return
        self.query_one("#err-confirm", Static).update("")
        in_thread(self, self.app.backend.reset_config, lambda _: self.say("Configuration reset to defaults.", "ok"))


class PowerScreen(ModalScreen[None]):
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
            self.dismiss(None)
            return
        self.query_one("#message", Static).update("Restarting..." if action == "reboot" else "Shutting down...")
        in_thread(self, lambda: self.app.backend.power(action), lambda _: None,
                  lambda e: self.query_one("#message", Static).update(f"[red]{escape(str(e))}[/]"))

    def action_cancel(self) -> None:
        self.dismiss(None)
