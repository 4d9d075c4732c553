"""The DCUI application. Status screen first; blocking work runs in thread workers.

Rendering rules for a real VGA console (TERM=linux): only box glyphs the standard console fonts
carry (``solid``/``double`` borders), no header icon, command palette off.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from textual import work
from textual.app import App, ComposeResult
from textual.containers import Vertical
from textual.widgets import Footer, Static

from qx_console.hostinfo import HostStatus, gather


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def _fmt_uptime(seconds: float) -> str:
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, _ = divmod(s, 60)
    return f"{d}d {h:02d}h {m:02d}m" if d else f"{h:02d}h {m:02d}m"


def render_status(st: HostStatus) -> str:
    lines = [
        f"[b]{st.product} {st.version}[/b]",
        "",
        f"Hostname:   {st.hostname}",
    ]
    if st.addresses:
        for ifname, addr in st.addresses:
            lines.append(f"Address:    {addr} ({ifname})")
            url_host = f"[{addr}]" if ":" in addr else addr
            lines.append(f"Manage at:  https://{url_host}:8443/")
    else:
        lines.append("Address:    none (no network configured)")
    lines += [
        f"CPU:        {st.cpu_percent:.0f} %",
        f"Memory:     {_fmt_bytes(st.mem_used)} of {_fmt_bytes(st.mem_total)}",
        f"Uptime:     {_fmt_uptime(st.uptime_s)}",
    ]
    return "\n".join(lines)


class ConsoleApp(App[None]):
    TITLE = "Quantix OS"
    ENABLE_COMMAND_PALETTE = False
    CSS = """
    Screen { background: $background; }
    #status { border: double $accent; padding: 1 2; margin: 1 2; height: auto; }
    """
    BINDINGS = [("ctrl+r", "refresh", "Refresh")]

    def __init__(self, *, ready_file: Path | None = None, refresh_s: float = 5.0) -> None:
        super().__init__()
        self._ready_file = ready_file
        self._refresh_s = refresh_s
        self._ready_written = False

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("Gathering host status…", id="status")
        yield Footer()

    def on_mount(self) -> None:
        self.action_refresh()
        self.set_interval(self._refresh_s, self.action_refresh)

    def action_refresh(self) -> None:
        self._gather()

    @work(thread=True, exclusive=True, group="status")
    def _gather(self) -> None:
        status = gather()
        self.call_from_thread(self._show, status)

    def _show(self, status: HostStatus) -> None:
        self.query_one("#status", Static).update(render_status(status))
        if not self._ready_written:
            self.call_after_refresh(self._mark_ready, status)

    def _mark_ready(self, status: HostStatus) -> None:
        """Tell the node (and the boot check) that this console drew its first real frame."""
        self._ready_written = True
        if self._ready_file is None:
            return
        self._ready_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._ready_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "version": status.version}))
        os.replace(tmp, self._ready_file)
