"""The Status screen (the default): what an operator at the server needs to see at a glance.

It refreshes itself from a thread worker every ``refresh_s`` seconds; the UI never waits on the host.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from rich.markup import escape
from textual.widgets import Static

from qx_console.backend import Health, HostStatus
from qx_console.ui import ConsoleScreen, KeyBar, console_safe, describe_error, in_thread, keys_text


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n} B"


def fmt_uptime(seconds: float) -> str:
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, _ = divmod(s, 60)
    return f"{d}d {h:02d}h {m:02d}m" if d else f"{h:02d}h {m:02d}m"


def fmt_health(h: Health) -> str:
    if h.ok is True:
        return "[green]ok[/]"
    if h.ok is False:
        return f"[red]FAILED[/] {escape(h.detail[:32])}"
    return f"[yellow]{escape((h.detail or 'unknown')[:40])}[/]"


def fmt_update(st: HostStatus) -> str:
    """What qx-update knows: an installed update awaiting a reboot, else what its last check found."""
    from rich.markup import escape

    if st.pending_update:
        return f"[yellow]{escape(st.pending_update)} installed: reboot to start it[/]"
    if st.available_update:
        return f"[yellow]{escape(st.available_update)} available[/]"
    return {"up-to-date": "up to date", "error": "[yellow]last check failed[/]"}.get(st.update_check,
                                                                                   "not checked yet")


def source_of(st: HostStatus, *keys: str, default: str = "default") -> str:
    for k in keys:
        if k in st.provenance:
            return st.provenance[k]
    return default


def render_status(st: HostStatus, width: int = 80) -> str:
    """The status text for a terminal ``width`` columns wide (narrower than 72: the certificate
    fingerprint goes on lines of its own instead of beside its label)."""
    from rich.markup import escape

    lines: list[str] = []
    if st.addresses:
        lines.append("Manage this host from a browser at:")
        for _, addr in st.addresses[:2]:
            host = f"[{addr}]" if ":" in addr else addr
            lines.append(f"  [b]https://{escape(host)}:8443/[/b]")
    else:
        lines.append("[yellow]No management address: press F2 to configure the network.[/]")
    lines.append("")
    net_src = source_of(st, "network.ipv4", "network.nic", default="dhcp")
    addrs = ", ".join(f"{a} ({i})" for i, a in st.addresses[:3]) or "none"
    blessed = {True: "good", False: "on trial", None: "state unknown"}[st.blessed]
    cpu = f"{st.cpu_percent:.0f} %" if st.cpu_percent is not None else "-"
    mem = f"{fmt_bytes(st.mem_used)} of {fmt_bytes(st.mem_total)}" if st.mem_total else "-"
    vms = str(st.vms_running) if st.vms_running is not None else "unknown"
    if st.update_detail:
        upd = f"[yellow]{escape(st.update_detail)[:56]}[/]"
    else:
        upd = f"channel {escape(st.update_channel or '?')}; " + fmt_update(st)
    tail: list[str] = []  # lines below the table (a narrow terminal's fingerprint)
    if st.node_cert is not None:
        fp = st.node_cert.fingerprint_lines()
        if width >= 72:
            cert = [("API cert", f"SHA-256 {escape(fp[0])}")] + [("", f"        {escape(more)}") for more in fp[1:]]
        else:
            cert = [("API cert", "SHA-256 (below)")]
            tail = [f"  {escape(part)}" for part in fp]
    else:
        cert = [("API cert", f"[yellow]{escape((st.node_cert_detail or 'unknown')[:60])}[/]")]
    rows = [
        ("Hostname", f"{escape(st.hostname)}  [cyan]({source_of(st, 'hostname')})[/]"),
        ("IP addresses", f"{escape(addrs)}  [cyan]({net_src})[/]"),
        ("Boot slot", f"{st.active_slot}, {blessed}"),
        ("CPU / memory", f"{cpu} / {mem}"),
        ("VMs running", vms),
        ("qx-node", fmt_health(st.node)),
        ("libvirt", fmt_health(st.libvirt)),
        ("Updates", upd),
        ("Uptime", fmt_uptime(st.uptime_s)),
        *cert,
    ]
    lines += [f"{k:<14}{v}" for k, v in rows]
    lines += tail
    return console_safe("\n".join(lines))


class StatusScreen(ConsoleScreen[None]):
    BINDINGS = [("f2", "app.customize", "Customize system"), ("f12", "app.power", "Shut down/Restart"),
                ("ctrl+r", "refresh", "Refresh")]

    def compose(self) -> ComposeResult:
        yield Static("Quantix OS", id="titlebar", markup=False)
        # Scrolls (Up/Down) where the terminal is too short for all of it (60x20).
        with VerticalScroll(classes="panel", id="status-panel") as v:
            v.border_title = "Status"
            if getattr(self.app, "banner", ""):
                yield Static(self.app.banner, id="banner", markup=False)
            yield Static("Gathering host status...", id="status")
        with Vertical(id="bottom"):
            yield Static("", id="notice", classes="hint")
            yield KeyBar(keys_text("", self.BINDINGS))

    def on_mount(self) -> None:
        self.set_interval(self.app.refresh_s, self.action_refresh)

    def on_screen_resume(self) -> None:
        # Shown first, and back from Customize: what the operator just changed, not the last periodic read.
        self.action_refresh()

    def action_refresh(self) -> None:
        # Never supersede a status read still in flight: on a slow host one read (qx-update, qx-node)
        # takes longer than the refresh interval, and an exclusive worker per tick dropped every result
        # before it arrived: the screen said "Gathering host status..." for good (install e2e under TCG).
        if any(w.group == "status" and w.node is self and not w.is_finished for w in self.app.workers):
            return
        in_thread(self, self.app.backend.status, self._show, self._failed, group="status")

    def _show(self, st: HostStatus) -> None:
        title = escape(console_safe(f"{st.product} {st.version}"))
        banner = getattr(self.app, "banner", "")
        self.query_one("#titlebar", Static).update(
            console_safe(f"{st.product} {st.version}" + (f"  [{banner}]" if banner else "")))
        self.query_one("#status", Static).update(f"[b]{title}[/b]\n" + render_status(st, self.size.width))
        self.app.first_status_shown(st)

    def _failed(self, e: BaseException) -> None:
        self.query_one("#status", Static).update(f"[red]Host status unavailable:[/] {escape(describe_error(e))}")
        self.app.first_status_shown(None)
