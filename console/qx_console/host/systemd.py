"""systemd and the journal on the real host: unit states, restarts, transient timers, log reading.

Invariants: only the units in :data:`qx_console.backend.SERVICES` are restarted from the console; ssh is
restarted only while its setting and its off-timer allow it (:func:`check_ssh_restart`, shared with the
in-memory backend) and only with ``try-restart``, so a restart never turns SSH on; a log filter is
checked (:func:`check_log_filter`) before journalctl runs.
"""

from __future__ import annotations

from pathlib import Path

from qx_common.errors import ExternalError, QxError, UserError
from qx_common.run import which

from qx_console.backend import LOG_SOURCES, SERVICES, ServiceState, BackendUnavailable, check_ssh_restart
from qx_console.hostconfig import check_log_filter
from qx_console.host.context import HostContext


class Systemd:
    def __init__(self, ctx: HostContext) -> None:
        self.ctx = ctx

    # -- units -----------------------------------------------------------------------------------
    def unit_state(self, name: str) -> ServiceState:
        """``name`` without ``.service``; a systemctl that cannot answer is state "unknown"."""
        try:
            p = self.ctx.cmd(["systemctl", "show", f"{name}.service", "-p", "ActiveState,SubState,Description"],
                             check=False, timeout=10)
        except QxError as e:
            return ServiceState(name, "unknown", str(e))
        kv = dict(line.partition("=")[::2] for line in p.stdout.splitlines())
        return ServiceState(name, kv.get("ActiveState", "unknown"), kv.get("SubState", ""))

    def start(self, *units: str) -> None:
        self.ctx.cmd(["systemctl", "start", *units], timeout=30)

    def stop(self, *units: str, check: bool = False) -> None:
        """Stop ``units``; by default a unit that is not loaded (no off-timer running) is no error."""
        self.ctx.cmd(["systemctl", "stop", *units], check=check, timeout=30)

    def run_later(self, unit: str, after_min: int, argv: list[str]) -> None:
        """``argv`` in ``after_min`` minutes as the transient timer ``unit``: systemd keeps it, so it fires
        even if the console restarts meanwhile."""
        self.ctx.cmd(["systemd-run", "--unit", unit, f"--on-active={after_min}min", *argv], timeout=30)

    def services(self) -> list[ServiceState]:
        return [self.unit_state(s) for s in SERVICES]

    def restart_service(self, name: str) -> None:
        """Restart ``name``. SSH follows its own setting: refused while SSH access is off, and only
        restarted while it runs (``try-restart``), so a restart never turns SSH on behind the off-timer."""
        if name not in SERVICES:
            raise UserError(f"service: '{name}' cannot be restarted from here", hint="pick one from the list")
        if name == "ssh":
            cfg, _ = self.ctx.load_config()
            check_ssh_restart(cfg.ssh.enabled, self.unit_state("ssh").active, self.ctx.lockdown_on())
            self.ctx.cmd(["systemctl", "try-restart", "ssh.service"], timeout=90)
            return
        self.ctx.cmd(["systemctl", "restart", f"{name}.service"], timeout=90)

    # -- the journal -------------------------------------------------------------------------------
    def logs(self, source: str, grep: str = "", lines: int = 200) -> list[str]:
        if source not in LOG_SOURCES:
            raise UserError(f"log source: '{source}' is unknown", hint="choose one of " + ", ".join(LOG_SOURCES))
        if grep and (err := check_log_filter(grep)):
            raise UserError(f"{err.field}: {err.message}", hint=err.hint)
        if which("journalctl") is None:
            raise BackendUnavailable("journalctl is not installed on this host")
        argv = ["journalctl", "--no-pager", "-q", "-o", "short-iso", "-n", str(lines)]
        if self.ctx.root != Path("/"):
            argv += ["--root", str(self.ctx.root)]
        argv += {"system": [], "kernel": ["-k"], "qx-node": ["-u", "qx-node.service"],
                 "qx-update": ["-u", "qx-update*"]}[source]
        if grep:
            argv += [f"--grep={grep}", "--case-sensitive=no"]
        p = self.ctx.cmd(argv, check=False, timeout=20)
        # journalctl exits 1 when --grep matched nothing, but also when it could not search: only
        # silence on stderr means "no entries".
        if p.returncode not in (0, 1) or (p.returncode == 1 and p.stderr.strip()):
            raise ExternalError(f"journalctl failed: {p.stderr.strip()[-200:]}")
        return p.stdout.splitlines()
