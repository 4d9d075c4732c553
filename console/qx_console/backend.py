"""The host backend: the ONE interface through which the console reads and changes the host.

Screens never touch files, commands or sockets; they call a :class:`HostBackend`. Two implementations:

* :class:`qx_console.linux.LinuxBackend` — the real one. It takes a root directory prefix (``/`` on a
  host; a temporary directory in tests), an optional network namespace to run network commands in,
  and an :class:`~qx_console.host.network.Activator` (networkd on a host, ``ip`` inside a test namespace).
  The file writing is the same code in every case; only the activation step differs. Its host work is
  split by concern in :mod:`qx_console.host` (network, accounts/SSH, systemd/journal, updates, power).
* :class:`qx_console.memory.MemoryBackend` — an in-memory implementation of the same interface for
  UI tests, snapshots and the benchmark (fixed state, no clock, no host data).

Every method may block (commands, HTTP); the app calls them from thread workers only. Failures are
raised as :mod:`qx_common.errors` types; "this feature is not on this host" is :class:`BackendUnavailable`.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from qx_common.errors import EnvironmentError_, UserError

from qx_console.hostconfig import HostConfig, NetworkConfig, Provenance


class BackendUnavailable(EnvironmentError_):
    """A feature's backing service/command is not present on this host (the reason is the message)."""


@dataclass(frozen=True)
class Nic:
    name: str
    mac: str
    link_up: bool
    speed_mbps: int | None  # None: unknown (virtual NICs, link down)

    def describe(self) -> str:
        speed = f"{self.speed_mbps} Mb/s" if self.speed_mbps else "speed ?"
        return f"{self.name:<10} {self.mac:<17}  {'up' if self.link_up else 'down':<4}  {speed}"


@dataclass(frozen=True)
class Health:
    ok: bool | None  # None: unknown / unreachable
    detail: str


@dataclass(frozen=True)
class SlotInfo:
    name: str  # "a" / "b"
    version: str  # "" if unknown/empty
    active: bool
    blessed: bool | None  # None: unknown
    bad: bool = False


@dataclass(frozen=True)
class NodeCert:
    """qx-node's TLS certificate, as an operator compares it with what a browser or client shows."""

    sha256: str  # "AB:CD:..." (32 bytes), as `openssl x509 -fingerprint -sha256` prints it
    names: tuple[str, ...] = ()  # subject alternative names
    not_after: str = ""  # "YYYY-MM-DD" (UTC)

    def fingerprint_lines(self, per_line: int = 16) -> list[str]:
        """The fingerprint in lines of ``per_line`` bytes (95 characters do not fit an 80-column line)."""
        parts = self.sha256.split(":")
        return [":".join(parts[i:i + per_line]) for i in range(0, len(parts), per_line)]


@dataclass(frozen=True)
class HostStatus:
    product: str
    version: str
    hostname: str
    addresses: list[tuple[str, str]] = field(default_factory=list)  # (interface, address)
    active_slot: str = "?"
    blessed: bool | None = None
    cpu_percent: float | None = None
    mem_used: int = 0
    mem_total: int = 0
    vms_running: int | None = None
    node: Health = Health(None, "not checked")
    libvirt: Health = Health(None, "not checked")
    update_channel: str = ""
    pending_update: str = ""  # version installed in the other slot, waiting for a reboot ("" none)
    available_update: str = ""  # version the last check found on the channel ("" none / not checked)
    update_check: str = ""  # result of qx-update's last check: up-to-date / available / error ("" never)
    update_detail: str = ""  # why update info is missing, if it is
    uptime_s: float = 0.0
    node_cert: NodeCert | None = None
    node_cert_detail: str = ""  # why the certificate is not shown, if it is not
    provenance: Provenance = field(default_factory=dict)


@dataclass(frozen=True)
class ProbeResult:
    target: str
    what: str  # "gateway" / "dns" / "resolve" / "custom"
    ok: bool
    detail: str


@dataclass(frozen=True)
class ServiceState:
    name: str
    active: str  # active / inactive / failed / ...
    detail: str = ""


@dataclass(frozen=True)
class UpdateState:
    slots: list[SlotInfo]
    channel: str
    available: str = ""  # version offered by a check, "" if none known
    pending: str = ""  # version installed in the other slot, waiting for a reboot ("" none)
    last_check: str = ""  # up-to-date / available / error; "" if qx-update never checked
    detail: str = ""
    raw: dict[str, Any] = field(default_factory=dict)


ProgressFn = Callable[[float, str], None]  # (fraction 0..1, message)

LOG_SOURCES = ("system", "qx-node", "qx-update", "kernel")
SERVICES = ("qx-node", "libvirtd", "systemd-networkd", "systemd-resolved", "ssh")


LOCKDOWN_HINT = "turn lockdown mode off under Customize > Lockdown Mode first"


def check_ssh_enable(lockdown: bool) -> None:
    """The rule both backends apply to turning SSH on: never while lockdown mode is on."""
    if lockdown:
        raise UserError("ssh: lockdown mode is on: SSH stays off", hint=LOCKDOWN_HINT)


def check_ssh_restart(enabled: bool, active: str, lockdown: bool = False) -> None:
    """The rule both backends apply to Services -> restart ssh: SSH access off in the configuration, or
    already turned off by its timer, is not restarted (that would turn it on, bypassing the setting);
    nor while lockdown mode is on."""
    check_ssh_enable(lockdown)
    if not enabled:
        raise UserError("ssh: SSH access is turned off", hint="turn it on under SSH Access (with its off-timer)")
    if active not in ("active", "reloading", "activating"):
        raise UserError(f"ssh: not running ({active}); its off-timer may have turned it off",
                        hint="turn it on again under SSH Access, which starts a new off-timer")


class HostBackend(abc.ABC):
    # -- status -----------------------------------------------------------------------------
    @abc.abstractmethod
    def status(self) -> HostStatus: ...

    # -- configuration ----------------------------------------------------------------------
    @abc.abstractmethod
    def load_config(self) -> tuple[HostConfig, Provenance]: ...

    @abc.abstractmethod
    def save_config(self, cfg: HostConfig, fields: tuple[str, ...]) -> None:
        """Validate + persist non-network settings (hostname, ssh, channel, lockdown) and apply them."""

    @abc.abstractmethod
    def list_nics(self) -> list[Nic]: ...

    # -- network: the primitives safe-apply is built from (see qx_console.safeapply) ----------
    @abc.abstractmethod
    def write_network(self, cfg: HostConfig) -> None:
        """Keep the current configuration as 'previous', then persist ``cfg`` (validated)."""

    @abc.abstractmethod
    def activate_network(self) -> None:
        """Make the running network match the persisted configuration."""

    @abc.abstractmethod
    def restore_previous_network(self) -> None:
        """Put the previous configuration back on disk and activate it."""

    @abc.abstractmethod
    def has_previous_network(self) -> bool: ...

    @abc.abstractmethod
    def mark_pending(self, info: dict[str, Any] | None) -> None:
        """Record (or clear, with None) that a safe-apply awaits its probe/confirmation."""

    @abc.abstractmethod
    def pending(self) -> dict[str, Any] | None: ...

    @abc.abstractmethod
    def ping(self, target: str, what: str, timeout_s: float = 2.0) -> ProbeResult: ...

    @abc.abstractmethod
    def resolve(self, name: str) -> ProbeResult: ...

    # How long a dynamic configuration (DHCP, IPv6 router advertisements) may take to produce a
    # default route before the probe calls it failed. A lease normally takes a few seconds.
    lease_wait_s: float = 30.0

    def probe(self, net: NetworkConfig, tries: int = 3) -> list[ProbeResult]:
        """Is the management network usable? Gateway(s) and DNS servers, a few tries each.

        With no static gateway, the gateways are what DHCP / router advertisements handed out: the
        probe waits up to :attr:`lease_wait_s` for a default route and pings it — a dynamic change
        that yields no lease (wrong VLAN, no DHCP server there) fails the probe and is reverted."""
        targets: list[tuple[str, str]] = []
        if net.ipv4.mode == "static" and net.ipv4.gateway:
            targets.append((net.ipv4.gateway, "gateway"))
        if net.ipv6.mode == "static" and net.ipv6.gateway:
            targets.append((net.ipv6.gateway, "gateway"))
        out = []
        if not targets and (net.ipv4.mode == "dhcp" or net.ipv6.mode == "auto"):
            deadline = time.monotonic() + self.lease_wait_s
            gateways = self.default_gateways()
            while not gateways and time.monotonic() < deadline:
                time.sleep(min(1.0, max(deadline - time.monotonic(), 0.0)))
                gateways = self.default_gateways()
            if not gateways:
                out.append(ProbeResult("default route", "gateway", False,
                                       f"no DHCP lease or router advertisement within {self.lease_wait_s:.0f} s"))
            targets += [(g, "gateway") for g in gateways]
        targets += [(d, "dns") for d in net.dns]
        for tgt, what in targets:
            res = self.ping(tgt, what)
            for _ in range(tries - 1):
                if res.ok:
                    break
                res = self.ping(tgt, what)
            out.append(res)
        return out

    def default_gateways(self) -> list[str]:
        """Gateways of the running default routes (what DHCP handed out, or the static ones)."""
        return []

    @abc.abstractmethod
    def restart_network(self) -> None: ...

    # -- security ---------------------------------------------------------------------------
    @abc.abstractmethod
    def verify_root_password(self, password: str) -> bool: ...

    @abc.abstractmethod
    def set_root_password(self, password: str) -> None: ...

    @abc.abstractmethod
    def set_ssh(self, enabled: bool, timeout_min: int) -> None: ...

    @abc.abstractmethod
    def ssh_state(self) -> ServiceState: ...

    @abc.abstractmethod
    def ssh_fingerprints(self) -> list[str]: ...

    # -- lockdown mode (qx_common.hostpaths.lockdown_file) -----------------------------------
    @abc.abstractmethod
    def lockdown(self) -> bool:
        """Is lockdown mode on?"""

    @abc.abstractmethod
    def set_lockdown(self, on: bool) -> None:
        """On: the lockdown file is written (qx-node refuses host configuration changes at once), then
        sshd and its off-timer are stopped; SSH cannot be turned on or restarted until it is off again.
        Off: the file is removed; SSH stays as it is (off) until turned on under SSH Access."""

    # -- keyboard layout (qx_console.keyboard: the installer's list) -----------------------------
    @abc.abstractmethod
    def keyboard_layout(self) -> str:
        """The stored layout (``us`` when none is stored)."""

    @abc.abstractmethod
    def set_keyboard_layout(self, name: str) -> str | None:
        """Store ``name`` for the next boots and load it now; ``None``, or why it could not be loaded now
        (serial line, no kbd: not an error, the stored choice still applies at the next boot)."""

    # -- support bundle (qx_console.support) ---------------------------------------------------
    @abc.abstractmethod
    def support_bundle(self) -> str:
        """Write a support bundle (secrets redacted) to the data partition and any mounted USB stick;
        returns the summary to show (where it went)."""

    # -- the qx-node API's identity (files qx-node writes on its first start) --------------------
    @abc.abstractmethod
    def node_certificate(self) -> NodeCert:
        """qx-node's TLS certificate; :class:`BackendUnavailable` until qx-node has created it."""

    @abc.abstractmethod
    def node_api_token(self) -> str:
        """qx-node's API bearer token (a secret: shown only on the operator's explicit request);
        :class:`BackendUnavailable` until qx-node has created it."""

    # -- logs and services ------------------------------------------------------------------
    @abc.abstractmethod
    def logs(self, source: str, grep: str = "", lines: int = 200) -> list[str]: ...

    @abc.abstractmethod
    def services(self) -> list[ServiceState]: ...

    @abc.abstractmethod
    def restart_service(self, name: str) -> None: ...

    # -- updates (qx-update) ----------------------------------------------------------------
    @abc.abstractmethod
    def update_status(self) -> UpdateState: ...

    @abc.abstractmethod
    def update_check(self) -> UpdateState: ...

    @abc.abstractmethod
    def update_apply(self, progress: ProgressFn) -> str: ...

    @abc.abstractmethod
    def update_rollback(self) -> str: ...

    @abc.abstractmethod
    def set_channel(self, name: str) -> None: ...

    # -- system -----------------------------------------------------------------------------
    @abc.abstractmethod
    def reset_config(self) -> None: ...

    @abc.abstractmethod
    def power(self, action: str) -> None:
        """'reboot' or 'poweroff'."""
