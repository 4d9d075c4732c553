"""Configure Management Network as a menu of small dialogs, like ESXi's "Configure Management Network".

Call order: :class:`NetworkMenuScreen` loads the configuration, its provenance and the NICs in a worker;
each menu item opens one small dialog (adapters, VLAN, IPv4, IPv6, DNS, hostname) on a copy of the
menu's *draft* :class:`~qx_console.hostconfig.HostConfig`, which returns the edited draft (OK) or
nothing (Esc / Cancel); F10, or Esc answered with "Apply", validates the whole draft with the shared
schema (:func:`qx_console.hostconfig.validate`) and hands it to
:class:`~qx_console.network_screens.SafeApplyScreen` — the same safe apply as the one-form screen,
which stays reachable from this menu ("All settings on one form").

Invariants:

* Nothing is written before Apply, and then only through safe apply (probe, confirm, else revert).
* The rules are the schema's: a dialog refuses to close while a field it owns is invalid (error under
  the field, naming it and the fix); an error of another item (a static address and no DNS server) is
  shown at Apply, naming the menu item that fixes it.
* Esc on the menu with a changed draft asks Apply / Discard / Cancel; Esc in a dialog drops only that
  dialog's edits.
* The dialogs settle the adapters first: with no adapter chosen (the factory default, DHCP on every
  wired NIC) the VLAN, IPv4, IPv6 and DNS dialogs say so instead of editing settings that would not apply.
"""

from __future__ import annotations

from dataclasses import replace

from rich.markup import escape
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import Button, Input, OptionList, Static
from textual.widgets.option_list import Option

from qx_console.backend import Nic
from qx_console.hostconfig import (
    TEAM_MODES, FieldError, HostConfig, IPv4Config, IPv6Config, NetworkConfig, Provenance, ValidationError,
    parse_dns_list, parse_domain_list, parse_int, validate,
)
from qx_console.network_screens import V4_MODES, V6_MODES, BaseScreen, NetworkScreen, SafeApplyScreen, _row
from qx_console.ui import ConsoleModal, FieldInput, console_safe, in_thread, keys_text

# key, label, what the item is for (the description pane shows it with the item's current value)
ITEMS: list[tuple[str, str, str]] = [
    ("adapters", "Network Adapters",
     "The NICs that carry the management network. Check one, several (each takes DHCP), or several as a "
     "team (one bonded link). None checked: the factory default, DHCP on every wired NIC."),
    ("vlan", "VLAN (optional)", "The VLAN id of the management network (1-4094), or none when the switch "
     "port carries it untagged."),
    ("ipv4", "IPv4 Configuration", "DHCP, or a static address with its prefix length and gateway."),
    ("ipv6", "IPv6 Configuration", "Automatic (router advertisements and DHCPv6), off, or a static address."),
    ("dns", "DNS Configuration", "The DNS servers (up to 8) and the search domains (up to 6) of this host."),
    ("hostname", "Hostname", "The name of this host (a short name, or a fully qualified one)."),
    ("form", "All settings on one form", "Every setting above on a single form, as the installer shows it."),
]
ITEM_FIELDS: dict[str, tuple[str, ...]] = {
    "adapters": ("network.nic", "network.extra_nics", "network.team"),
    "vlan": ("network.vlan",),
    "ipv4": ("network.ipv4",),
    "ipv6": ("network.ipv6",),
    "dns": ("network.dns", "network.search_domain"),
    "hostname": ("hostname",),
}
NEEDS_ADAPTER = ("vlan", "ipv4", "ipv6", "dns")


def owns(fields: tuple[str, ...], err: FieldError) -> bool:
    """Is ``err`` about one of ``fields`` (a field, a part of it, or an element of a list)?"""
    return any(err.field == f or err.field.startswith((f + ".", f + "[")) for f in fields)


def item_of(err: FieldError) -> str:
    """The menu item whose dialog fixes ``err``."""
    return next((k for k, f in ITEM_FIELDS.items() if owns(f, err)), "form")


def current_value(key: str, cfg: HostConfig) -> str:
    """One line saying what the draft holds for menu item ``key``."""
    n = cfg.network
    if key == "adapters":
        if not n.configured:
            return "all wired NICs, DHCP (factory default)"
        team = f", team {n.team}" if n.teamed else (", DHCP on each" if n.extra_nics else "")
        return ", ".join(n.nics) + team
    if not n.configured and key in NEEDS_ADAPTER:
        return "from DHCP (factory default)"
    if key == "vlan":
        return str(n.vlan) if n.vlan else "none"
    if key == "ipv4":
        v4 = n.ipv4
        return f"static {v4.address}/{v4.prefix} gateway {v4.gateway or 'none'}" if v4.mode == "static" else "DHCP"
    if key == "ipv6":
        v6 = n.ipv6
        return f"static {v6.address}/{v6.prefix} gateway {v6.gateway or 'none'}" if v6.mode == "static" else v6.mode
    if key == "dns":
        return (", ".join(n.dns) or "from DHCP") + (f"; search {' '.join(n.search_domains)}" if n.search_domain
                                                    else "")
    if key == "hostname":
        return cfg.hostname
    return ""


class NetDialog(ConsoleModal["HostConfig | None"]):
    """A small dialog editing part of the draft. Subclasses compose :meth:`body` and :meth:`build` a
    candidate draft; OK validates it with the schema and closes only when the fields in ``OWN`` are
    valid. Enter in a field moves to the next one (OK after the last)."""

    TITLE = ""
    OWN: dict[str, tuple[str, ...]] = {}  # widget id -> schema fields whose errors show under it
    BINDINGS = [("escape", "cancel", "Cancel"), ("f10", "ok", "OK")]

    def __init__(self, draft: HostConfig, nics: list[Nic]) -> None:
        super().__init__()
        self.draft = draft
        self.nics = nics

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog") as v:
            v.border_title = self.TITLE
            yield from self.body()
            yield Static("", id="dialog-error", classes="error")
            yield Horizontal(Button("OK", id="ok"), Button("Cancel", id="cancel"), classes="buttons")
            yield Static(keys_text("Up/Down Field   Left/Right Button   Enter Select", self.BINDINGS),
                         classes="hint")

    def body(self) -> ComposeResult:
        raise NotImplementedError

    def build(self) -> HostConfig:
        """The draft with this dialog's fields; :class:`ValidationError` for text that does not parse."""
        raise NotImplementedError

    def on_mount(self) -> None:
        for field in self.query(FieldInput):
            field.enter = "auto"  # the next field, OK after the last (moved while Enter is handled)
        first = next((w for w in self.query("Input, OptionList, Button") if w.focusable), None)
        if first is not None:
            first.focus()

    def val(self, wid: str) -> str:
        return self.query_one(f"#{wid}", Input).value.strip()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        # Only the last field submits (FieldInput enter="auto" moves from the others by itself).
        self.action_ok()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "ok":
            self.action_ok()
        elif event.button.id == "cancel":
            self.close(None)

    def action_cancel(self) -> None:
        self.close(None)

    def action_ok(self) -> None:
        try:
            cand = self.build()
            validate(cand)
        except ValidationError as e:
            mine = [x for x in e.errors if any(owns(f, x) for f in self.OWN.values())]
            if mine:
                self.show_errors(mine)
                return
            # Only other items' fields are wrong (e.g. DNS still empty for a new static address): those
            # are reported at Apply, naming the item; this dialog's part is fine.
            cand = self.build()
        self.close(cand)

    def show_errors(self, errors: list[FieldError]) -> None:
        first: Widget | None = None
        for wid, fields in self.OWN.items():
            e = next((x for x in errors if owns(fields, x)), None)
            self.query_one(f"#err-{wid}", Static).update(escape(console_safe(f"  {e}")) if e else "")
            if e and first is None:
                first = self.query_one(f"#{wid}")
        self.query_one("#dialog-error", Static).update(f"{len(errors)} field(s) need fixing.")
        if first is not None:
            first.focus()


def _err_line(wid: str) -> Static:
    return Static("", id=f"err-{wid}", classes="error")


class AdaptersDialog(NetDialog):
    """Multi-select: Enter or Space checks/unchecks the highlighted adapter; the team mode cycles."""

    TITLE = "Network Adapters"
    OWN = {"nics": ("network.nic", "network.extra_nics"), "team": ("network.team",)}
    BINDINGS = [("escape", "cancel", "Cancel"), ("f10", "ok", "OK"), ("space", "toggle", "Check")]

    def __init__(self, draft: HostConfig, nics: list[Nic]) -> None:
        super().__init__(draft, nics)
        n = draft.network
        self.checked: list[str] = list(n.nics)
        self.team = n.team if n.team in TEAM_MODES else "none"
        present = {x.name for x in nics}
        # A configured adapter that is not found now is listed (and stays checked) rather than dropped
        # without a word: the operator unchecks it.
        self.names = [x.name for x in nics] + [x for x in n.nics if x not in present]
        self.labels = {x.name: console_safe(x.describe()) for x in nics}
        self.labels.update({x: f"{x:<10} (not found on this host)" for x in n.nics if x not in present})

    def _prompt(self, name: str) -> str:
        mark = f"[{self.checked.index(name) + 1}]" if name in self.checked else "[ ]"
        return escape(f"{mark} {self.labels[name]}")

    def body(self) -> ComposeResult:
        yield Static("Check the adapters for management (the first checked is the primary).")
        yield OptionList(*[Option(self._prompt(x), id=x) for x in self.names], id="nics")
        yield _err_line("nics")
        yield Horizontal(Static("Team", classes="label"), Button(self.team, id="team"),
                         Static("  Enter cycles", classes="source"), classes="form-row")
        yield _err_line("team")
        yield Static("", id="nics-note", classes="hint")

    def on_mount(self) -> None:
        super().on_mount()
        self._note()

    def _note(self) -> None:
        n = len(self.checked)
        note = ("None checked: the factory default (DHCP on every wired NIC)." if n == 0 else
                "One adapter." if n == 1 else
                f"{n} adapters, each with DHCP (no static address or VLAN without a team)." if self.team == "none"
                else f"{n} adapters as one team ({self.team}).")
        self.query_one("#nics-note", Static).update(note)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.action_toggle()

    def action_toggle(self) -> None:
        opts = self.query_one("#nics", OptionList)
        if not opts.has_focus or opts.highlighted is None:
            return
        name = self.names[opts.highlighted]
        if name in self.checked:
            self.checked.remove(name)
        else:
            self.checked.append(name)
        for i, x in enumerate(self.names):
            opts.replace_option_prompt_at_index(i, self._prompt(x))
        self._note()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "team":
            self.team = TEAM_MODES[(TEAM_MODES.index(self.team) + 1) % len(TEAM_MODES)]
            event.button.label = self.team
            self._note()
        else:
            super().on_button_pressed(event)

    def build(self) -> HostConfig:
        if not self.checked:
            return replace(self.draft, network=NetworkConfig())
        n = self.draft.network
        return replace(self.draft, network=replace(n, nic=self.checked[0], extra_nics=tuple(self.checked[1:]),
                                                   team=self.team))


class VlanDialog(NetDialog):
    TITLE = "VLAN (optional)"
    OWN = {"vlan": ("network.vlan",)}

    def body(self) -> ComposeResult:
        yield Static("The management network's VLAN id; empty: none (untagged).")
        yield from _row("VLAN id", "vlan", str(self.draft.network.vlan or ""), placeholder="1-4094")

    def build(self) -> HostConfig:
        vlan, err = parse_int(self.val("vlan"), "network.vlan", "enter a VLAN id 1-4094, or leave it empty",
                              required=False)
        if err:
            raise ValidationError([err])
        return replace(self.draft, network=replace(self.draft.network, vlan=vlan))


class _AddressDialog(NetDialog):
    """IPv4 or IPv6: a mode that cycles on Enter, and the static fields (greyed out otherwise)."""

    FAMILY = "ipv4"
    MODES: tuple[str, ...] = V4_MODES
    MAX_PREFIX = 32

    def __init__(self, draft: HostConfig, nics: list[Nic]) -> None:
        super().__init__(draft, nics)
        self.mode = getattr(draft.network, self.FAMILY).mode

    def body(self) -> ComposeResult:
        c = getattr(self.draft.network, self.FAMILY)
        f = self.FAMILY
        yield Horizontal(Static("Mode", classes="label"), Button(self.mode, id="mode"),
                         Static("  Enter cycles", classes="source"), classes="form-row")
        yield from _row("Address", "addr", c.address, placeholder="192.0.2.10" if f == "ipv4" else "2001:db8::10")
        yield from _row("Prefix length", "prefix", str(c.prefix) if c.address else "",
                        placeholder="24" if f == "ipv4" else "64")
        yield from _row("Gateway", "gw", c.gateway, placeholder="192.0.2.1" if f == "ipv4" else "fe80::1")

    def on_mount(self) -> None:
        self._sync()
        super().on_mount()

    def _sync(self) -> None:
        self.query_one("#mode", Button).label = self.mode
        for wid in ("addr", "prefix", "gw"):
            self.query_one(f"#{wid}", Input).disabled = self.mode != "static"

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "mode":
            self.mode = self.MODES[(self.MODES.index(self.mode) + 1) % len(self.MODES)]
            self._sync()
        else:
            super().on_button_pressed(event)

    def build(self) -> HostConfig:
        f = self.FAMILY
        cls = IPv4Config if f == "ipv4" else IPv6Config
        if self.mode != "static":
            new = cls(self.mode)
        else:
            prefix, err = parse_int(self.val("prefix"), f"network.{f}.prefix",
                                    f"enter the prefix length 1-{self.MAX_PREFIX}")
            if err:
                # The other fields are checked too, so every error shows at once.
                errs = [err]
                try:
                    validate(replace(self.draft, network=replace(self.draft.network, **{
                        f: cls("static", self.val("addr"), 1, self.val("gw"))})))
                except ValidationError as e:
                    errs += [x for x in e.errors if x.field in (f"network.{f}.address",)]
                raise ValidationError(errs)
            new = cls("static", self.val("addr"), prefix or 0, self.val("gw"))
        return replace(self.draft, network=replace(self.draft.network, **{f: new}))


class Ipv4Dialog(_AddressDialog):
    TITLE = "IPv4 Configuration"
    OWN = {"mode": ("network.ipv4.mode",), "addr": ("network.ipv4.address",), "prefix": ("network.ipv4.prefix",),
           "gw": ("network.ipv4.gateway",)}

    def body(self) -> ComposeResult:
        yield from super().body()
        yield _err_line("mode")


class Ipv6Dialog(_AddressDialog):
    TITLE = "IPv6 Configuration"
    FAMILY = "ipv6"
    MODES = V6_MODES
    MAX_PREFIX = 128
    OWN = {"mode": ("network.ipv6.mode",), "addr": ("network.ipv6.address",), "prefix": ("network.ipv6.prefix",),
           "gw": ("network.ipv6.gateway",)}

    def body(self) -> ComposeResult:
        yield from super().body()
        yield _err_line("mode")


class DnsDialog(NetDialog):
    TITLE = "DNS Configuration"
    OWN = {"dns": ("network.dns",), "search": ("network.search_domain",)}

    def body(self) -> ComposeResult:
        n = self.draft.network
        yield Static("Addresses and domains separated by commas or spaces.")
        yield from _row("DNS servers", "dns", ", ".join(n.dns), placeholder="192.0.2.53, 192.0.2.54")
        yield from _row("Search domains", "search", ", ".join(n.search_domains), placeholder="example.com")

    def build(self) -> HostConfig:
        return replace(self.draft, network=replace(self.draft.network, dns=parse_dns_list(self.val("dns")),
                                                   search_domain=parse_domain_list(self.val("search"))))


class HostnameDialog(NetDialog):
    TITLE = "Hostname"
    OWN = {"hostname": ("hostname",)}

    def body(self) -> ComposeResult:
        yield from _row("Hostname", "hostname", self.draft.hostname, placeholder="host1.example.com")

    def build(self) -> HostConfig:
        return replace(self.draft, hostname=self.val("hostname"))


DIALOGS: dict[str, type[NetDialog]] = {"adapters": AdaptersDialog, "vlan": VlanDialog, "ipv4": Ipv4Dialog,
                                       "ipv6": Ipv6Dialog, "dns": DnsDialog, "hostname": HostnameDialog}


class ApplyChangesDialog(ConsoleModal[str]):
    """Esc on the network menu with changes: "apply", "discard" or "cancel" (Esc)."""

    BINDINGS = [("escape", "cancel", "Cancel")]

    def __init__(self, changed: list[str]) -> None:
        super().__init__()
        self.changed = changed

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog") as v:
            v.border_title = "Configure Management Network"
            yield Static("Apply changes and restart the management network?")
            yield Static("Changed: " + ", ".join(self.changed), classes="hint")
            yield Horizontal(Button("Apply", id="apply"), Button("Discard", id="discard"),
                             Button("Cancel", id="cancel"), classes="buttons")
            yield Static("Left/Right Button   Enter Select   Esc Cancel", classes="hint")

    def on_mount(self) -> None:
        self.query_one("#apply", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.close(str(event.button.id))

    def action_cancel(self) -> None:
        self.close("cancel")


class NetworkMenuScreen(BaseScreen):
    TITLE_TEXT = "Configure Management Network"
    HINTS = "Up/Down Select   Enter Change"
    BINDINGS = [("f10", "apply", "Apply"), ("escape", "back", "Back")]

    def __init__(self) -> None:
        super().__init__()
        self.original: HostConfig | None = None
        self.draft: HostConfig | None = None
        self.prov: Provenance = {}
        self.nics: list[Nic] = []
        self._applying = False

    def compose(self) -> ComposeResult:
        yield from self.compose_title()
        with Vertical(classes="panel") as v:
            v.border_title = "Configure Management Network"
            yield OptionList(*[Option(label, id=key) for key, label, _ in ITEMS], id="netmenu")
            yield Static("Loading...", id="describe", classes="describe")
        yield Static("", id="message", classes="hint")
        yield self.keybar()

    def on_mount(self) -> None:
        self.query_one("#netmenu").focus()
        self._load()

    def _load(self) -> None:
        be = self.app.backend
        in_thread(self, be.load_config, self._loaded, group="config", exclusive=True)
        # Apart: a host whose NICs cannot be listed still gets its other settings edited (the
        # error panel says why the adapter list is empty).
        in_thread(self, be.list_nics, self._nics, group="nics", exclusive=True, what="Listing the adapters")

    def _loaded(self, data: tuple[HostConfig, Provenance]) -> None:
        cfg, self.prov = data
        self.original = self.draft = cfg
        self._refresh()

    def _nics(self, nics: list[Nic]) -> None:
        self.nics = nics

    def on_screen_resume(self) -> None:
        if self._applying:  # back from safe apply: show what the host now has
            self._applying = False
            self._load()

    def changed_items(self) -> list[str]:
        if self.draft is None or self.original is None:
            return []
        return [label for key, label, _ in ITEMS if key in ITEM_FIELDS
                and current_value(key, self.draft) != current_value(key, self.original)]

    def _refresh(self) -> None:
        """Menu labels (a changed item says so) and the description pane."""
        menu = self.query_one("#netmenu", OptionList)
        changed = set(self.changed_items())
        for i, (_, label, _) in enumerate(ITEMS):
            menu.replace_option_prompt_at_index(i, f"{label} (changed)" if label in changed else label)
        self._describe()

    def _describe(self) -> None:
        menu = self.query_one("#netmenu", OptionList)
        if menu.highlighted is None:
            return
        key, _, text = ITEMS[menu.highlighted]
        now = current_value(key, self.draft) if self.draft is not None else ""
        src = ""
        if self.draft is not None and key in ITEM_FIELDS:
            src = self.prov.get(ITEM_FIELDS[key][0], "default")
        # The current value first: a short terminal shows the pane's first lines only.
        line = f"Now: {now}" + (f"  ({src})" if src else "") + "\n" if now else ""
        self.query_one("#describe", Static).update(escape(console_safe(line + text)))

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        self._describe()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.open(str(event.option.id))

    def open(self, key: str) -> None:
        if self.draft is None:
            return  # still loading
        self.say("")
        if key == "form":
            self.app.push_screen(NetworkScreen())
            self._applying = True  # the form applies by itself: reload when back
            return
        if key in NEEDS_ADAPTER and not self.draft.network.configured:
            self.say("Choose the adapters first: with the factory default every wired NIC takes its "
                     "settings from DHCP.", "error")
            return

        def done(cfg: HostConfig | None) -> None:
            if cfg is not None and self.draft is not None:
                self.draft = cfg
                self._refresh()
        self.app.push_screen(DIALOGS[key](self.draft, self.nics), done)

    def action_apply(self) -> None:
        if self.draft is None:
            return
        if not self.changed_items():
            self.say("Nothing changed: nothing to apply.")
            return
        try:
            validate(self.draft)
        except ValidationError as e:
            first = e.errors[0]
            item = dict((k, label) for k, label, _ in ITEMS)[item_of(first)]
            more = f" (and {len(e.errors) - 1} more)" if len(e.errors) > 1 else ""
            self.say(f"Not applied: {first}{more}. Fix it under '{item}'.", "error")
            return
        self._applying = True
        self.app.push_screen(SafeApplyScreen(self.draft))

    def action_back(self) -> None:
        changed = self.changed_items()
        if not changed:
            self.leave()
            return

        def answered(choice: str | None) -> None:
            if choice == "apply":
                self.action_apply()
            elif choice == "discard":
                self.leave()
        self.app.push_screen(ApplyChangesDialog(changed), answered)
