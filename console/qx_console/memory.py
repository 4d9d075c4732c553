"""An in-memory :class:`~qx_console.backend.HostBackend` with a fixed, deterministic host.

Used by the UI tests, the snapshot tests, the benchmark and ``qx-console --demo``. It renders the
networkd files with the same :func:`qx_console.networkd.render` as the real backend and keeps them in
``files``; the "network" answers probes for the gateways listed in ``reachable``. No clock, no host data.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from typing import Any

from qx_common.errors import UserError

from qx_console import networkd
from qx_console.backend import (
    LOG_SOURCES, SERVICES, Health, HostBackend, HostStatus, Nic, NodeCert, ProbeResult, ProgressFn, ServiceState,
    SlotInfo, BackendUnavailable, UpdateState, check_ssh_enable, check_ssh_restart,
)
from qx_console.hostconfig import (
    NETWORK_FIELDS, HostConfig, Provenance, SshConfig, check_log_filter, check_lookup_name, check_ping_target,
    validate,
)


# The demo host's root password (qx-console --demo says it in --help).
DEMO_PASSWORD = "quantix-pw"


@dataclass
class MemoryState:
    config: HostConfig = field(default_factory=lambda: HostConfig(hostname="qx-demo"))
    provenance: Provenance = field(default_factory=lambda: {"hostname": "answer-file"})
    nics: list[Nic] = field(default_factory=lambda: [
        Nic("eno1", "52:54:00:12:34:56", True, 1000), Nic("eno2", "52:54:00:12:34:57", False, None)])
    addresses: list[tuple[str, str]] = field(default_factory=lambda: [("eno1", "10.0.2.15")])
    reachable: set[str] = field(default_factory=lambda: {"10.0.2.2", "10.0.2.3"})
    # The default routes the running network has (what DHCP handed out); [] = no lease.
    gateways: list[str] = field(default_factory=lambda: ["10.0.2.2"])
    password: str = DEMO_PASSWORD
    updates_available: bool = True
    update_state: UpdateState = field(default_factory=lambda: UpdateState(
        slots=[SlotInfo("a", "1.2.3", True, True), SlotInfo("b", "1.2.2", False, True)], channel="stable",
        last_check="up-to-date"))
    ssh: ServiceState = field(default_factory=lambda: ServiceState("ssh", "inactive", "dead"))
    journal: dict[str, list[str]] = field(default_factory=lambda: {
        s: [f"2026-01-01T00:00:0{i}+0000 qx-demo {s}[1]: message {i}" for i in range(5)] for s in LOG_SOURCES})
    # qx-node's identity; None: qx-node has not started yet (no certificate / token written)
    node_cert: NodeCert | None = field(default_factory=lambda: NodeCert(
        sha256=":".join(f"{(i * 37 + 11) % 256:02X}" for i in range(32)),
        names=("localhost", "qx-demo", "127.0.0.1", "::1"), not_after="2036-01-01"))
    node_token: str | None = "qxdemo-Tok3n-0123456789abcdefghijklmnopqrstu"
    lockdown: bool = False
    keyboard: str = "us"


class MemoryBackend(HostBackend):
    def __init__(self, state: MemoryState | None = None) -> None:
        self.s = state or MemoryState()
        self.files: dict[str, str] = networkd.render(self.s.config.network)
        self.previous: tuple[HostConfig, Provenance, dict[str, str]] | None = None
        self.active: HostConfig = self.s.config
        self._pending: dict[str, Any] | None = None
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def _log(self, what: str) -> None:
        with self._lock:
            self.calls.append(what)

    def status(self) -> HostStatus:
        return HostStatus(
            product="Quantix OS", version="1.2.3", hostname=self.s.config.hostname,
            addresses=list(self.s.addresses), active_slot="A", blessed=True, cpu_percent=4.0,
            mem_used=3 * 2**30, mem_total=16 * 2**30, vms_running=2,
            node=Health(True, "ok"), libvirt=Health(True, "libvirtd answers"),
            update_channel=self.s.update_state.channel,
            pending_update=self.s.update_state.pending if self.s.updates_available else "",
            available_update=self.s.update_state.available if self.s.updates_available else "",
            update_check=self.s.update_state.last_check if self.s.updates_available else "",
            update_detail="" if self.s.updates_available else "not available: 'qx-update' is not installed",
            uptime_s=3725.0, node_cert=self.s.node_cert,
            node_cert_detail="" if self.s.node_cert else "not created yet (qx-node has not started)",
            provenance=dict(self.s.provenance),
        )

    def load_config(self) -> tuple[HostConfig, Provenance]:
        return self.s.config, dict(self.s.provenance)

    def save_config(self, cfg: HostConfig, fields: tuple[str, ...]) -> None:
        validate(cfg)
        self._log("save_config")
        self.s.config = cfg
        self.s.provenance.update({f: "console" for f in fields})

    def list_nics(self) -> list[Nic]:
        return list(self.s.nics)

    def write_network(self, cfg: HostConfig) -> None:
        validate(cfg)
        self._log("write_network")
        self.previous = (self.s.config, dict(self.s.provenance), dict(self.files))
        self.s.config = cfg
        self.s.provenance.update({f: "console" for f in NETWORK_FIELDS + ("hostname",)})
        self.files = networkd.render(cfg.network)

    def activate_network(self) -> None:
        self._log("activate_network")
        self.active = self.s.config

    def restore_previous_network(self) -> None:
        if self.previous is None:
            raise UserError("there is no previous network configuration to restore",
                            hint="it is kept when a new configuration is applied from this console")
        self._log("restore_previous_network")
        self.s.config, self.s.provenance, self.files = self.previous
        self.active = self.s.config

    def has_previous_network(self) -> bool:
        return self.previous is not None

    def mark_pending(self, info: dict[str, Any] | None) -> None:
        self._pending = info

    def pending(self) -> dict[str, Any] | None:
        return self._pending

    def ping(self, target: str, what: str, timeout_s: float = 2.0) -> ProbeResult:
        if (err := check_ping_target(target, what)):
            return ProbeResult(target, what, False, err.message)
        ok = target in self.s.reachable
        return ProbeResult(target, what, ok, "answered in 0.4 ms" if ok else "no answer")

    def resolve(self, name: str) -> ProbeResult:
        if (err := check_lookup_name(name, "resolve")):
            return ProbeResult(name, "resolve", False, err.message)
        if name.endswith(".invalid"):
            return ProbeResult(name, "resolve", False, "name not resolved")
        return ProbeResult(name, "resolve", True, "192.0.2.80")

    def default_gateways(self) -> list[str]:
        self._log("default_gateways")
        return list(self.s.gateways)

    def restart_network(self) -> None:
        self._log("restart_network")

    def verify_root_password(self, password: str) -> bool:
        return password == self.s.password

    def set_root_password(self, password: str) -> None:
        self._log("set_root_password")
        self.s.password = password

    def set_ssh(self, enabled: bool, timeout_min: int) -> None:
        new = replace(self.s.config, ssh=SshConfig(enabled, timeout_min))
        validate(new)
        if enabled:
            check_ssh_enable(self.s.lockdown)
        self._log(f"set_ssh {enabled} {timeout_min}")
        self.s.config = new
        self.s.ssh = ServiceState("ssh", "active" if enabled else "inactive", "running" if enabled else "dead")

    def ssh_state(self) -> ServiceState:
        return self.s.ssh

    def lockdown(self) -> bool:
        return self.s.lockdown

    def support_bundle(self) -> str:
        # The in-memory host writes nothing (tests, --demo): it says what a host would have done.
        self._log("support_bundle")
        return ("Support bundle: /var/lib/quantix/support/qx-support-qx-demo.tar.zst (demo: not written)\n"
                "No USB stick found: copy the file with scp, or insert a stick and create it again.")

    def keyboard_layout(self) -> str:
        return self.s.keyboard

    def set_keyboard_layout(self, name: str) -> str | None:
        from qx_console.keyboard import check_layout
        if (err := check_layout(name, "keyboard")):
            raise UserError(str(err), hint=err.hint)
        self._log(f"set_keyboard_layout {name}")
        self.s.keyboard = name
        return None

    def set_lockdown(self, on: bool) -> None:
        self._log(f"set_lockdown {on}")
        self.s.lockdown = on
        self.s.config = replace(self.s.config, lockdown=on)
        if on:
            self.s.ssh = ServiceState("ssh", "inactive", "dead")

    def ssh_fingerprints(self) -> list[str]:
        return ["256 SHA256:Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4cXV1eHF1dXg root@qx-demo (ED25519)"]

    def node_certificate(self) -> NodeCert:
        if self.s.node_cert is None:
            raise BackendUnavailable("qx-node has not created its TLS certificate yet")
        return self.s.node_cert

    def node_api_token(self) -> str:
        if self.s.node_token is None:
            raise BackendUnavailable("qx-node has not created its API token yet")
        self._log("node_api_token")
        return self.s.node_token

    def logs(self, source: str, grep: str = "", lines: int = 200) -> list[str]:
        if (err := check_log_filter(grep)):
            raise UserError(f"{err.field}: {err.message}", hint=err.hint)
        return [ln for ln in self.s.journal[source] if grep.lower() in ln.lower()][-lines:]

    def services(self) -> list[ServiceState]:
        return [self.s.ssh if n == "ssh" else ServiceState(n, "active", "running") for n in SERVICES]

    def restart_service(self, name: str) -> None:
        if name == "ssh":
            check_ssh_restart(self.s.config.ssh.enabled, self.s.ssh.active, self.s.lockdown)
        self._log(f"restart_service {name}")

    def _updates(self) -> None:
        if not self.s.updates_available:
            raise BackendUnavailable("'qx-update' is not installed on this host")

    def update_status(self) -> UpdateState:
        self._updates()
        return self.s.update_state

    def update_check(self) -> UpdateState:
        self._updates()
        self.s.update_state = replace(self.s.update_state, available="1.3.0", last_check="available")
        return self.s.update_state

    def update_apply(self, progress: ProgressFn) -> str:
        self._updates()
        for i in range(5):
            progress(i / 4, "writing slot B")
        self._log("update_apply")
        self.s.update_state = replace(self.s.update_state, available="", pending="1.3.0")
        return "1.3.0 installed in slot B; it becomes active at the next reboot"

    def update_rollback(self) -> str:
        self._updates()
        self._log("update_rollback")
        return "slot B boots next"

    def set_channel(self, name: str) -> None:
        self._updates()
        new = replace(self.s.config, update_channel=name)
        validate(new)
        self.s.config = new
        self.s.update_state = replace(self.s.update_state, channel=name)

    def reset_config(self) -> None:
        self._log("reset_config")
        self.s.config = HostConfig()
        self.s.provenance = {}
        self.files = {}

    def power(self, action: str) -> None:
        self._log(f"power {action}")
