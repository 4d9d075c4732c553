"""The real host backend: :class:`LinuxBackend` composes the host concerns of :mod:`qx_console.host`.

``LinuxBackend(root, netns=None, activator=..., node=..., updates=...)``:

* ``root`` prefixes every path it reads or writes (``/proc``, ``/sys``, ``/etc/shadow``, the config on
  the data partition, the ESP), so tests run it against a temporary directory.
* ``netns`` runs the network commands (``ip``, ``ping``, ``getent``) inside that namespace.
* ``activator``: how the network concern makes the running network match the files
  (:class:`~qx_console.host.network.NetworkdActivator` on a host, ``IpActivator`` in namespace tests).

This module holds no host logic of its own beyond composing: each :class:`HostBackend` method is a
one-line delegation to the concern that owns it (network, accounts/SSH, systemd/journal, updates, power,
machine), except :meth:`LinuxBackend.status`, which gathers from all of them, and the two methods that
span concerns (``save_config``: store + running hostname; ``reset_config``: store + network).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from qx_common import log
from qx_common.errors import QxError
from qx_common.run import CompletedProcess
from qx_common.version import PRODUCT_NAME, product_version

from qx_console.backend import (
    Health, HostBackend, HostStatus, Nic, NodeCert, ProbeResult, ProgressFn, ServiceState, BackendUnavailable,
    UpdateState,
)
from qx_console.clients import NODE_URL, NodeClient, UpdateClient
from qx_console.host.accounts import NODE_CERT, NODE_TOKEN, Accounts, read_node_cert, read_node_token
from qx_console.host.context import HostContext
from qx_console.host.keys import Keys
from qx_console.host.machine import Machine
from qx_console.host.network import Activator, IpActivator, Network, NetworkdActivator
from qx_console.host.power import Power
from qx_console.host.systemd import Systemd
from qx_console.host.updates import Updates
from qx_console.hostconfig import HostConfig, Provenance, validate
from qx_console.store import ConfigStore

__all__ = ["NODE_CERT", "NODE_TOKEN", "Activator", "IpActivator", "LinuxBackend", "NetworkdActivator",
           "read_node_cert", "read_node_token", "wait_until"]

_log = log.get("console.linux")


class LinuxBackend(HostBackend):
    def __init__(
        self,
        root: Path = Path("/"),
        *,
        netns: str | None = None,
        activator: Activator | None = None,
        node: NodeClient | None = None,
        updates: UpdateClient | None = None,
    ) -> None:
        self.ctx = HostContext(Path(root), netns)
        self.node = node or NodeClient(NODE_URL, self.ctx.path(NODE_CERT), self.ctx.path(NODE_TOKEN))
        self.machine = Machine(self.ctx)
        self.network = Network(self.ctx, activator)
        self.systemd = Systemd(self.ctx)
        self.accounts = Accounts(self.ctx, self.systemd)
        self.updates = Updates(self.ctx, updates)
        self.power_ = Power(self.ctx)
        self.keys = Keys(self.ctx)

    # The context's parts, as callers and tests know them.
    @property
    def root(self) -> Path:
        return self.ctx.root

    @property
    def netns(self) -> str | None:
        return self.ctx.netns

    @property
    def store(self) -> ConfigStore:
        return self.ctx.store

    @property
    def shadow_file(self) -> Path:
        return self.accounts.shadow_file

    def cmd(self, argv: list[str], *, check: bool = True, timeout: float = 15,
            net: bool = True) -> CompletedProcess[str]:
        return self.ctx.cmd(argv, check=check, timeout=timeout, net=net)

    def addresses(self) -> list[tuple[str, str]]:
        return self.network.addresses()

    def set_running_hostname(self, name: str) -> None:
        self.network.set_running_hostname(name)

    # -- status: gathered from every concern ----------------------------------------------------
    def status(self) -> HostStatus:
        slot = self.machine.slot()
        used, total = self.machine.memory()
        node = Health(None, "unreachable")
        libvirt = Health(None, "unknown (qx-node unreachable)")
        vms: int | None = None
        try:
            h = self.node.health()
            node = Health(h.get("status") == "ok", f"{h.get('status', '?')}")
            lv = (h.get("components") or {}).get("libvirt") or {}
            libvirt = Health(bool(lv.get("ok")), str(lv.get("detail", "")))
            vms = sum(1 for v in self.node.vms() if str(v.get("state", "")).lower() == "running")
        except QxError as e:
            node = Health(None, str(e)) if node.ok is None else node
        up = self.updates.summary()
        cert: NodeCert | None = None
        cert_detail = ""
        try:
            cert = self.accounts.node_certificate()
        except BackendUnavailable:
            cert_detail = "not created yet (qx-node has not started)"
        except QxError as e:
            cert_detail = e.message
        cfg, prov = self.load_config()
        return HostStatus(
            product=PRODUCT_NAME, version=product_version(self.root), hostname=self.machine.hostname(),
            addresses=self.network.addresses(), active_slot=slot, blessed=up.blessed,
            cpu_percent=self.machine.cpu_percent(), mem_used=used, mem_total=total, vms_running=vms, node=node,
            libvirt=libvirt, update_channel=up.channel or cfg.update_channel, pending_update=up.pending,
            available_update=up.available, update_check=up.last_check, update_detail=up.detail,
            uptime_s=self.machine.uptime_s(), node_cert=cert, node_cert_detail=cert_detail, provenance=prov,
        )

    # -- configuration -----------------------------------------------------------------------------
    def load_config(self) -> tuple[HostConfig, Provenance]:
        return self.ctx.load_config()

    def save_config(self, cfg: HostConfig, fields: tuple[str, ...]) -> None:
        validate(cfg)
        old, _ = self.load_config()
        self.ctx.store.save(cfg, "console", fields)
        if cfg.hostname != old.hostname:
            self.network.set_running_hostname(cfg.hostname)

    def reset_config(self) -> None:
        self.ctx.store.reset()
        try:
            self.network.activate()
        except QxError as e:
            _log.warning("network not re-activated after reset: %s", e)

    # -- network -------------------------------------------------------------------------------------
    def list_nics(self) -> list[Nic]:
        return self.network.list_nics()

    def write_network(self, cfg: HostConfig) -> None:
        self.network.write(cfg)

    def activate_network(self) -> None:
        self.network.activate()

    def restore_previous_network(self) -> None:
        self.network.restore_previous()

    def has_previous_network(self) -> bool:
        return self.network.has_previous()

    def mark_pending(self, info: dict[str, Any] | None) -> None:
        self.network.mark_pending(info)

    def pending(self) -> dict[str, Any] | None:
        return self.network.pending()

    def ping(self, target: str, what: str, timeout_s: float = 2.0) -> ProbeResult:
        return self.network.ping(target, what, timeout_s)

    def resolve(self, name: str) -> ProbeResult:
        return self.network.resolve(name)

    def default_gateways(self) -> list[str]:
        return self.network.default_gateways()

    def restart_network(self) -> None:
        self.network.restart()

    # -- accounts and SSH -----------------------------------------------------------------------------
    def verify_root_password(self, password: str) -> bool:
        return self.accounts.verify_root_password(password)

    def set_root_password(self, password: str) -> None:
        self.accounts.set_root_password(password)

    def set_ssh(self, enabled: bool, timeout_min: int) -> None:
        self.accounts.set_ssh(enabled, timeout_min)

    def ssh_state(self) -> ServiceState:
        return self.accounts.ssh_state()

    def ssh_fingerprints(self) -> list[str]:
        return self.accounts.ssh_fingerprints()

    def lockdown(self) -> bool:
        return self.accounts.lockdown()

    def set_lockdown(self, on: bool) -> None:
        self.accounts.set_lockdown(on)

    def support_bundle(self) -> str:
        from qx_console import support
        return support.make_bundle(self.root).summary()

    def keyboard_layout(self) -> str:
        return self.keys.layout()

    def set_keyboard_layout(self, name: str) -> str | None:
        return self.keys.set_layout(name)

    def node_certificate(self) -> NodeCert:
        return self.accounts.node_certificate()

    def node_api_token(self) -> str:
        return self.accounts.node_api_token()

    # -- systemd and the journal ------------------------------------------------------------------------
    def logs(self, source: str, grep: str = "", lines: int = 200) -> list[str]:
        return self.systemd.logs(source, grep, lines)

    def services(self) -> list[ServiceState]:
        return self.systemd.services()

    def restart_service(self, name: str) -> None:
        self.systemd.restart_service(name)

    # -- updates ----------------------------------------------------------------------------------------
    def update_status(self) -> UpdateState:
        return self.updates.status()

    def update_check(self) -> UpdateState:
        return self.updates.check()

    def update_apply(self, progress: ProgressFn) -> str:
        return self.updates.apply(progress)

    def update_rollback(self) -> str:
        return self.updates.rollback()

    def set_channel(self, name: str) -> None:
        self.updates.set_channel(name)

    # -- power --------------------------------------------------------------------------------------------
    def power(self, action: str) -> None:
        self.power_.power(action)


def wait_until(cond: Any, timeout_s: float, step_s: float = 0.05) -> bool:
    """Poll ``cond()`` until true or the deadline (helper for callers and tests)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step_s)
    return bool(cond())
