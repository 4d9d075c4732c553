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

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Button, Input, OptionList, Static
from textual.widgets.option_list import Option

from qx_console.backend import Nic, ProbeResult
from qx_console.hostconfig import (
    HostConfig, IPv4Config, IPv6Config, NetworkConfig, Provenance, ValidationError, parse_dns_list,
)
from qx_console.safeapply import ApplyOutcome, safe_apply
from qx_console.ui import KeyBar, SecretInput, in_thread

V4_MODES = ("dhcp", "static")
V6_MODES = ("auto", "off", "static")

# form field id -> schema field path(s) whose errors are shown under it
FIELDS: dict[str, tuple[str, ...]] = {
    "nic": ("network.nic",),
    "vlan": ("network.vlan",),
    "v4addr": ("network.ipv4.address",),
    "v4prefix": ("network.ipv4.prefix",),
    "v4gw": ("network.ipv4.gateway",),
    "v6addr": ("network.ipv6.address",),
    "v6prefix": ("network.ipv6.prefix",),
    "v6gw": ("network.ipv6.gateway",),
    "dns": ("network.dns",),
    "search": ("network.search_domain",),
    "hostname": ("hostname",),
}


class BaseScreen(Screen[None]):
    """A Customize sub-screen: title bar, one panel, key bar; Esc goes back."""

    BINDINGS = [("escape", "back", "Back")]
    TITLE_TEXT = ""
    KEYS = "Esc Back"

    def compose_title(self) -> ComposeResult:
        yield Static(f"Quantix OS - {self.TITLE_TEXT}", id="titlebar")

    def keybar(self) -> KeyBar:
        return KeyBar(self.KEYS)

    def action_back(self) -> None:
        self.app.pop_screen()

    def say(self, text: str, css: str = "hint") -> None:
        w = self.query_one("#message", Static)
        w.set_classes(css)
        w.update(text)


def _row(label: str, widget_id: str, value: str, source: str = "", placeholder: str = "",
         secret: bool = False) -> ComposeResult:
    """A labelled input, its provenance, and the line under it where its validation error appears."""
    cls = SecretInput if secret else Input
    parts = [Static(label, classes="label"), cls(value=value, id=widget_id, placeholder=placeholder)]
    if source:
        parts.append(Static(f" ({source})", classes="source"))
    yield Horizontal(*parts, classes="form-row")
    yield Static("", id=f"err-{widget_id}", classes="error")


def _src(prov: Provenance, key: str, default: str = "default") -> str:
    return prov.get(key, default)


class NetworkScreen(BaseScreen):
    TITLE_TEXT = "Configure Management Network"
    KEYS = "Tab Next  Enter Select  F10 Apply  Esc Back"
    BINDINGS = [("escape", "back", "Back"), ("f10", "apply", "Apply")]

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
        opts = OptionList(*[Option(x.describe(), id=x.name) for x in self.nics], id="nic")
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
        if n.nic:
            idx = next((i for i, x in enumerate(self.nics) if x.name == n.nic), None)
            if idx is not None:
                opts.highlighted = idx
        elif self.nics:
            opts.highlighted = 0
        self._sync_modes()
        opts.focus(scroll_visible=False)  # it is in view; scrolling would hide the heading above it

    def _mode_row(self, label: str, wid: str, mode: str, source: str) -> list:
        return [Horizontal(Static(label, classes="label"), Button(f"{mode}", id=wid),
                           Static(f" ({source})  Enter cycles", classes="source"), classes="form-row")]

    def _sync_modes(self) -> None:
        self.query_one("#v4mode", Button).label = self.v4_mode
        self.query_one("#v6mode", Button).label = self.v6_mode
        for wid in ("v4addr", "v4prefix", "v4gw"):
            self.query_one(f"#{wid}", Input).disabled = self.v4_mode != "static"
        for wid in ("v6addr", "v6prefix", "v6gw"):
            self.query_one(f"#{wid}", Input).disabled = self.v6_mode != "static"

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
            self.app.pop_screen()

    def _val(self, wid: str) -> str:
        return self.query_one(f"#{wid}", Input).value.strip()

    def build(self) -> HostConfig:
        """The form as a HostConfig; numbers that do not parse become errors of their field."""
        errors = []
        from qx_console.hostconfig import FieldError

        def num(wid: str, fld: str, default: int | None) -> int | None:
            v = self._val(wid)
            if not v:
                return default
            try:
                return int(v)
            except ValueError:
                errors.append(FieldError(fld, f"'{v}' is not a number", "enter digits only"))
                return default

        opts = self.query_one("#nic", OptionList)
        nic = ""
        if opts.highlighted is not None and self.nics:
            nic = self.nics[opts.highlighted].name
        net = NetworkConfig(
            nic=nic,
            vlan=num("vlan", "network.vlan", None),
            ipv4=IPv4Config(self.v4_mode, self._val("v4addr"), num("v4prefix", "network.ipv4.prefix", 24) or 0,
                            self._val("v4gw")) if self.v4_mode == "static" else IPv4Config("dhcp"),
            ipv6=IPv6Config(self.v6_mode, self._val("v6addr"), num("v6prefix", "network.ipv6.prefix", 64) or 0,
                            self._val("v6gw")) if self.v6_mode == "static" else IPv6Config(self.v6_mode),
            dns=parse_dns_list(self._val("dns")),
            search_domain=self._val("search"),
        )
        cfg = replace(self.cfg, hostname=self._val("hostname"), network=net)
        if errors:
            raise ValidationError(errors)
        return cfg

    def show_errors(self, err: ValidationError | None) -> None:
        for wid, fields in FIELDS.items():
            e = next((x for x in (err.errors if err else []) if x.field in fields
                      or any(x.field.startswith(f + "[") for f in fields)), None)
            self.query_one(f"#err-{wid}", Static).update(f"  {e}" if e else "")
        if err:
            self.say(f"Not applied: {len(err.errors)} field(s) need fixing. Nothing was written.", "error")

    def action_apply(self) -> None:
        from qx_console.hostconfig import validate

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
    KEYS = "K Keep this configuration   R Revert now"
    BINDINGS = [("k", "keep", "Keep"), ("r", "revert", "Revert"), ("escape", "back", "Back")]

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
            app.call_from_thread(self._ask)
            self._answer.wait(timeout)
            return self._keep

        def step(s: str) -> None:
            app.call_from_thread(self.query_one("#step", Static).update, f"Step: {s}...")

        in_thread(self, lambda: safe_apply(app.backend, self.cfg, confirm, confirm_seconds=seconds, on_step=step),
                  self._done)
        self.set_interval(0.5, self._tick)

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
            self.app.pop_screen()

    def _done(self, outcome: ApplyOutcome) -> None:
        self.outcome = outcome
        self.query_one("#countdown", Static).update("")
        self.query_one("#probes", Static).update(
            "\n".join(f"{'[green]ok[/]  ' if p.ok else '[red]FAIL[/]'} {p.what:<8} {p.target:<16} {p.detail}"
                      for p in outcome.probes))
        self.query_one("#step", Static).update(
            f"[green]Applied:[/] {outcome.reason}" if outcome.kept else f"[red]Reverted:[/] {outcome.reason}")
        self.KEYS = "Esc Back"
        self.query_one(KeyBar).update("Esc Back")


class TestNetworkScreen(BaseScreen):
    TITLE_TEXT = "Test Management Network"
    KEYS = "Enter Run tests   Esc Back"

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
        in_thread(self, job, self._show, group="test", exclusive=True)

    def _show(self, res: list[ProbeResult]) -> None:
        from rich.markup import escape
        self.query_one("#results", Static).update("\n".join(
            f"{'[green]OK  [/]' if r.ok else '[red]FAIL[/]'} {r.what:<8} {escape(r.target):<22} {escape(r.detail)}"
            for r in res))
