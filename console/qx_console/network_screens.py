"""Management network screens: configure (with safe apply), test, restore previous, restart.

Configure builds a :class:`~qx_console.hostconfig.HostConfig` from the form and validates it with the
shared schema; errors appear inline under the field they name and nothing is written. A valid change
goes to :class:`SafeApplyScreen`, which runs :func:`qx_console.safeapply.safe_apply` in a worker and
shows the confirmation countdown; silence or a failed probe reverts by itself.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Any

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widget import Widget
from textual.widgets import Button, Input, OptionList, Static
from textual.widgets.option_list import Option

from qx_console.backend import Nic, ProbeResult
from qx_console.hostconfig import (
    FieldError, HostConfig, IPv4Config, IPv6Config, NetworkConfig, Provenance, ValidationError, check_lookup_name,
    check_ping_target, parse_dns_list, parse_int, validate,
)
from qx_console.safeapply import ApplyOutcome, safe_apply
from qx_console.ui import (
    FIELD_KEYS, ConsoleScreen, FieldInput, KeyBar, SecretInput, console_safe, from_thread, in_thread, keys_text,
)

V4_MODES = ("dhcp", "static")
V6_MODES = ("auto", "off", "static")

# form field id -> schema field path(s) whose errors are shown under it; in the form's order (top to
# bottom: the form scrolls to the first one with an error)
FIELDS: dict[str, tuple[str, ...]] = {
    "nic": ("network.nic",),
    "v4addr": ("network.ipv4.address",),
    "v4prefix": ("network.ipv4.prefix",),
    "v4gw": ("network.ipv4.gateway",),
    "v6addr": ("network.ipv6.address",),
    "v6prefix": ("network.ipv6.prefix",),
    "v6gw": ("network.ipv6.gateway",),
    "dns": ("network.dns",),
    "search": ("network.search_domain",),
    "hostname": ("hostname",),
    "vlan": ("network.vlan",),
}


class BaseScreen(ConsoleScreen[None]):
    """A Customize sub-screen: title bar, one panel, key bar; Esc goes back."""

    # Up/Down move between fields as in a dialog (ui.FIELD_KEYS); a list or log keeps them for itself.
    BINDINGS = [("escape", "back", "Back"), *FIELD_KEYS]
    TITLE_TEXT = ""
    HINTS = ""  # keys the screen's widgets handle (Tab, Enter, Up/Down); the rest come from BINDINGS
    KEYS = "Esc Back"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Generated from the real bindings; a class that writes KEYS itself keeps its own text.
        if "KEYS" not in cls.__dict__:
            cls.KEYS = keys_text(cls.HINTS, cls.BINDINGS)

    def compose_title(self) -> ComposeResult:
        banner = getattr(self.app, "banner", "")
        yield Static(f"Quantix OS - {self.TITLE_TEXT}" + (f"  [{banner}]" if banner else ""), id="titlebar",
                     markup=False)

    def keybar(self) -> KeyBar:
        return KeyBar(self.KEYS)

    def action_back(self) -> None:
        self.leave()

    def leave(self) -> None:
        """Back to the screen below, only while this one is on top (never pops another screen)."""
        if self.is_active:
            self.app.pop_screen()

    def say(self, text: str, css: str = "hint") -> None:
        """The screen's one message line (plain text; replaces the previous message)."""
        w = self.query_one("#message", Static)
        w.set_classes(css)
        w.update(escape(console_safe(text)))

    def field_error(self, wid: str, err: FieldError | str | None) -> None:
        """Show (or clear, with None) the error line under the field ``wid``."""
        self.query_one(f"#err-{wid}", Static).update(escape(console_safe(f"  {err}")) if err else "")


def _row(label: str, widget_id: str, value: str, source: str = "", placeholder: str = "",
         secret: bool = False, enter: str = "submit") -> ComposeResult:
    """A labelled input, its provenance, and the line under it where its validation error appears.
    ``enter``: what Enter does in the field (:class:`~qx_console.ui.FieldInput`)."""
    cls = SecretInput if secret else FieldInput
    parts = [Static(label, classes="label"), cls(value=value, id=widget_id, placeholder=placeholder, enter=enter)]
    if source:
        parts.append(Static(f" ({source})", classes="source"))
    yield Horizontal(*parts, classes="form-row")
    yield Static("", id=f"err-{widget_id}", classes="error")


def _src(prov: Provenance, key: str, default: str = "default") -> str:
    return prov.get(key, default)


# The adapter list's first entry: the factory default, DHCP (and IPv6 autoconfiguration) on every wired
# NIC. Not an interface name (the schema refuses '*'), so it cannot clash with a real adapter.
ALL_NICS = "*all*"
ALL_NICS_LABEL = "All adapters: DHCP on every wired NIC (factory default)"


class NetworkScreen(BaseScreen):
    TITLE_TEXT = "Configure Management Network"
    HINTS = "Tab Next   Enter Select"
    BINDINGS = [("f10", "apply", "Apply"), ("escape", "back", "Back")]

    def __init__(self) -> None:
        super().__init__()
        self.cfg, self.prov = HostConfig(), {}
        self.nics: list[Nic] = []
        self.v4_mode = "dhcp"
        self.v6_mode = "auto"

    def compose(self) -> ComposeResult:
        yield from self.compose_title()
        with VerticalScroll(id="form"):
            yield Static("Loading...", id="loading")
        yield Static("", id="message", classes="hint")
        yield self.keybar()

    def on_mount(self) -> None:
        be = self.app.backend
        in_thread(self, lambda: (be.load_config(), be.list_nics()), self._loaded)

    async def _loaded(self, data: tuple[tuple[HostConfig, Provenance], list[Nic]]) -> None:
        (self.cfg, self.prov), self.nics = data
        n = self.cfg.network
        self.v4_mode, self.v6_mode = n.ipv4.mode, n.ipv6.mode
        form = self.query_one("#form", VerticalScroll)
        self.query_one("#loading").remove()
        p = self.prov
        nic_src = _src(p, "network.nic")
        heading = f"Network adapter  ({nic_src})" if n.nic else "Network adapter  (default: DHCP on all)"
        widgets: list[Widget] = [Static(heading)]
        opts = OptionList(Option(ALL_NICS_LABEL, id=ALL_NICS),
                          *[Option(escape(console_safe(x.describe())), id=x.name) for x in self.nics], id="nic")
        widgets.append(opts)
        widgets.append(Static("", id="err-nic", classes="error"))
        v4_src = _src(p, "network.ipv4", "dhcp" if n.ipv4.mode == "dhcp" else "default")
        widgets += self._mode_row("IPv4", "v4mode", self.v4_mode, v4_src)
        widgets += _row("  Address", "v4addr", n.ipv4.address, placeholder="192.0.2.10")
        widgets += _row("  Prefix length", "v4prefix", str(n.ipv4.prefix))
        widgets += _row("  Gateway", "v4gw", n.ipv4.gateway, placeholder="192.0.2.1")
        widgets += self._mode_row("IPv6", "v6mode", self.v6_mode, _src(p, "network.ipv6"))
        widgets += _row("  Address", "v6addr", n.ipv6.address, placeholder="2001:db8::10")
        widgets += _row("  Prefix length", "v6prefix", str(n.ipv6.prefix))
        widgets += _row("  Gateway", "v6gw", n.ipv6.gateway)
        widgets += _row("DNS servers", "dns", ", ".join(n.dns), _src(p, "network.dns", "dhcp"),
                        placeholder="192.0.2.53, 192.0.2.54")
        widgets += _row("Search domain", "search", n.search_domain, _src(p, "network.search_domain"))
        widgets += _row("Hostname", "hostname", self.cfg.hostname, _src(p, "hostname"))
        widgets += _row("VLAN id (empty: none)", "vlan", str(n.vlan or ""), _src(p, "network.vlan"))
        widgets.append(Horizontal(Button("Apply (F10)", id="apply"), Button("Cancel", id="cancel"),
                                  classes="buttons"))
        # Awaited: _sync_modes (which greys out the fields of the modes not in use) and the focus below
        # need the rows mounted.
        await form.mount_all(widgets)
        # The stored adapter; a stored adapter that is gone, or none (factory default): "All adapters".
        opts.highlighted = next((i + 1 for i, x in enumerate(self.nics) if n.nic and x.name == n.nic), 0)
        self._sync_modes()
        opts.focus(scroll_visible=False)  # it is in view; scrolling would hide the heading above it

    def _mode_row(self, label: str, wid: str, mode: str, source: str) -> list:
        return [Horizontal(Static(label, classes="label"), Button(f"{mode}", id=wid),
                           Static(f" ({source})  Enter cycles", classes="source"), classes="form-row")]

    def chosen_nic(self) -> str:
        """The adapter the form manages ("" = all adapters, the factory default)."""
        opts = self.query_one("#nic", OptionList)
        if opts.highlighted is None:
            return ""
        nic = str(opts.get_option_at_index(opts.highlighted).id)
        return "" if nic == ALL_NICS else nic

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option_list.id == "nic" and self.query("#v4mode"):
            self._sync_modes()

    def _sync_modes(self) -> None:
        """Grey out what does not apply: the static fields of a dynamic mode, and with "All adapters"
        everything but the hostname (the factory default takes its addresses from DHCP/autoconf)."""
        one = bool(self.chosen_nic())
        self.query_one("#v4mode", Button).label = self.v4_mode
        self.query_one("#v6mode", Button).label = self.v6_mode
        self.query_one("#v4mode", Button).disabled = not one
        self.query_one("#v6mode", Button).disabled = not one
        for wid in ("v4addr", "v4prefix", "v4gw"):
            self.query_one(f"#{wid}", Input).disabled = not one or self.v4_mode != "static"
        for wid in ("v6addr", "v6prefix", "v6gw"):
            self.query_one(f"#{wid}", Input).disabled = not one or self.v6_mode != "static"
        for wid in ("dns", "search", "vlan"):
            self.query_one(f"#{wid}", Input).disabled = not one

    def on_button_pressed(self, event: Button.Pressed) -> None:
        bid = event.button.id
        if bid == "v4mode":
            self.v4_mode = V4_MODES[(V4_MODES.index(self.v4_mode) + 1) % len(V4_MODES)]
            self._sync_modes()
        elif bid == "v6mode":
            self.v6_mode = V6_MODES[(V6_MODES.index(self.v6_mode) + 1) % len(V6_MODES)]
            self._sync_modes()
        elif bid == "apply":
            self.action_apply()
        elif bid == "cancel":
            self.leave()

    def _val(self, wid: str) -> str:
        return self.query_one(f"#{wid}", Input).value.strip()

    def build(self) -> HostConfig:
        """The form as a HostConfig; numbers that do not parse (or are missing) become errors of their
        field (an empty prefix is an error, never a silent /24 or /64)."""
        errors: list[FieldError] = []

        def num(wid: str, fld: str, hint: str, required: bool = True) -> int | None:
            value, err = parse_int(self._val(wid), fld, hint, required=required)
            if err:
                errors.append(err)
            return value

        nic = self.chosen_nic()
        if not nic:
            # "All adapters": the factory default, whatever the (greyed-out) fields still hold.
            cfg = replace(self.cfg, hostname=self._val("hostname"), network=NetworkConfig())
            if errors:
                raise ValidationError(errors)
            return cfg
        net = NetworkConfig(
            nic=nic,
            vlan=num("vlan", "network.vlan", "enter a VLAN id 1-4094, or leave it empty for none", required=False),
            ipv4=IPv4Config(self.v4_mode, self._val("v4addr"),
                            num("v4prefix", "network.ipv4.prefix", "enter the prefix length 1-32, e.g. 24") or 0,
                            self._val("v4gw")) if self.v4_mode == "static" else IPv4Config("dhcp"),
            ipv6=IPv6Config(self.v6_mode, self._val("v6addr"),
                            num("v6prefix", "network.ipv6.prefix", "enter the prefix length 1-128, e.g. 64") or 0,
                            self._val("v6gw")) if self.v6_mode == "static" else IPv6Config(self.v6_mode),
            dns=parse_dns_list(self._val("dns")),
            search_domain=self._val("search"),
        )
        cfg = replace(self.cfg, hostname=self._val("hostname"), network=net)
        if errors:
            # The form's own errors first, then every schema error of the fields that did parse.
            try:
                validate(cfg)
            except ValidationError as e:
                errors += [x for x in e.errors if x.field not in {y.field for y in errors}]
            raise ValidationError(errors)
        return cfg

    def show_errors(self, err: ValidationError | None) -> None:
        """Each error under its field; the form scrolls to the first one (a small terminal shows only
        part of the form)."""
        first: Widget | None = None
        for wid, fields in FIELDS.items():
            e = next((x for x in (err.errors if err else []) if x.field in fields
                      or any(x.field.startswith(f + "[") for f in fields)), None)
            self.field_error(wid, e)
            if e and first is None:
                first = self.query_one(f"#{wid}")
        if err:
            self.say(f"Not applied: {len(err.errors)} field(s) need fixing. Nothing was written.", "error")
            if first is not None:
                first.focus(scroll_visible=False)
                # The error line sits right under its field: in view, both are.
                line = self.query_one(f"#err-{first.id}")
                # After the refresh: the line has just got its text (and its height).
                form = self.query_one("#form", VerticalScroll)
                self.call_after_refresh(form.scroll_to_widget, line, animate=False, top=False)
        else:
            self.say("")

    def action_apply(self) -> None:
        if not self.query("#nic"):
            return  # still loading: there is no form to apply yet
        try:
            cfg = self.build()
            validate(cfg)
        except ValidationError as e:
            self.show_errors(e)
            return
        self.show_errors(None)
        self.app.push_screen(SafeApplyScreen(cfg))


class SafeApplyScreen(BaseScreen):
    """Runs safe apply; while waiting for the operator: K keeps, R reverts, silence reverts."""

    TITLE_TEXT = "Applying Network Configuration"
    BINDINGS = [("k", "keep", "Keep this configuration"), ("r", "revert", "Revert now"),
                Binding("escape", "back", "Back", show=False)]  # only once the outcome is known

    def __init__(self, cfg: HostConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self._answer = threading.Event()
        self._keep = False
        self._deadline: float | None = None
        self.outcome: ApplyOutcome | None = None

    def compose(self) -> ComposeResult:
        yield from self.compose_title()
        with Vertical(classes="panel") as v:
            v.border_title = "Safe apply"
            yield Static("Starting...", id="step")
            yield Static("", id="probes")
            yield Static("", id="countdown", classes="hint")
        yield Static("", id="message", classes="hint")
        yield self.keybar()

    def on_mount(self) -> None:
        app = self.app
        seconds = app.confirm_seconds

        def confirm(timeout: float) -> bool:
            self._deadline = time.monotonic() + timeout
            from_thread(self, self._ask)
            self._answer.wait(timeout)
            return self._keep

        def step(s: str) -> None:
            from_thread(self, self._step, s)

        in_thread(self, lambda: safe_apply(app.backend, self.cfg, confirm, confirm_seconds=seconds, on_step=step),
                  self._done)
        self.set_interval(0.5, self._tick)

    def _step(self, s: str) -> None:
        self.query_one("#step", Static).update(escape(console_safe(f"Step: {s}...")))

    def _ask(self) -> None:
        self.query_one("#probes", Static).update("[green]Gateway and DNS answer.[/]")
        self._tick()

    def _tick(self) -> None:
        if self._deadline is None or self.outcome is not None:
            return
        left = max(0, int(self._deadline - time.monotonic() + 0.999))
        self.query_one("#countdown", Static).update(
            f"Keep this configuration? Press K to keep it. Reverting by itself in {left} s.")

    def action_keep(self) -> None:
        if self._deadline is not None and not self._answer.is_set():
            self._keep = True
            self._answer.set()

    def action_revert(self) -> None:
        if self._deadline is not None and not self._answer.is_set():
            self._keep = False
            self._answer.set()

    def action_back(self) -> None:
        if self.outcome is not None:
            self.leave()

    def _done(self, outcome: ApplyOutcome) -> None:
        self.outcome = outcome
        self.query_one("#countdown", Static).update("")
        self.query_one("#probes", Static).update("\n".join(
            f"{'[green]ok[/]  ' if p.ok else '[red]FAIL[/]'} {p.what:<8} {escape(p.target):<16} "
            f"{escape(console_safe(p.detail))}" for p in outcome.probes))
        reason = escape(console_safe(outcome.reason))
        self.query_one("#step", Static).update(
            f"[green]Applied:[/] {reason}" if outcome.kept else f"[red]Reverted:[/] {reason}")
        self.KEYS = "Esc Back"
        self.query_one(KeyBar).update("Esc Back")


class TestNetworkScreen(BaseScreen):
    TITLE_TEXT = "Test Management Network"
    HINTS = "Enter Run tests"

    def compose(self) -> ComposeResult:
        yield from self.compose_title()
        with Vertical(classes="panel") as v:
            v.border_title = "Ping gateway and DNS servers, resolve a name"
            yield from _row("Also ping (optional)", "target", "", placeholder="address or name")
            yield from _row("Resolve name", "name", "quantix-os.org")
            yield Horizontal(Button("Run tests", id="run"), classes="buttons")
            yield Static("", id="results")
        yield Static("", id="message", classes="hint")
        yield self.keybar()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.run_tests()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.run_tests()

    def run_tests(self) -> None:
        be = self.app.backend
        target = self.query_one("#target", Input).value.strip()
        name = self.query_one("#name", Input).value.strip()
        e_target = check_ping_target(target) if target else None
        e_name = check_lookup_name(name) if name else None
        self.field_error("target", e_target)
        self.field_error("name", e_name)
        self.say("")
        if e_target or e_name:
            self.query_one("#results", Static).update("")
            self.say("Not run: correct the field(s) above.", "error")
            return

        def job() -> list[ProbeResult]:
            cfg, _ = be.load_config()
            res = be.probe(cfg.network, tries=1)
            if not any(r.what == "gateway" for r in res):
                # DHCP (or no gateway in the form): test the gateway the host really routes through
                gws = be.default_gateways()
                res[:0] = [be.ping(g, "gateway") for g in gws] or [
                    ProbeResult("-", "gateway", False, "no default route: the host has no gateway")]
            if name:
                res.append(be.resolve(name))
            if target:
                res.append(be.ping(target, "custom"))
            return res

        self.query_one("#results", Static).update("Testing...")
        in_thread(self, job, self._show, self._failed, group="test", exclusive=True)

    def _failed(self, e: BaseException) -> None:
        from qx_console.ui import describe_error
        self.query_one("#results", Static).update("")
        self.say(f"Test failed: {describe_error(e)}", "error")

    def _show(self, res: list[ProbeResult]) -> None:
        self.query_one("#results", Static).update("\n".join(
            f"{'[green]OK  [/]' if r.ok else '[red]FAIL[/]'} {r.what:<8} {escape(console_safe(r.target)):<22} "
            f"{escape(console_safe(r.detail))}" for r in res))
