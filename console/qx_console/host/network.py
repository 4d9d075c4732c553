"""The management network of the real host: addresses and NICs, the persisted configuration's
write / activate / revert primitives safe apply is built from (:mod:`qx_console.safeapply`), and probes.

Call order (safe apply): :meth:`Network.write` (keeps the current files as 'previous') ->
:meth:`Network.mark_pending` -> :meth:`Network.activate` -> probes -> :meth:`Network.mark_pending` (None)
or :meth:`Network.restore_previous`.

The :class:`Activator` is the only part that differs between a host and a test: writing the files is the
same code; :class:`NetworkdActivator` then asks networkd to reload, :class:`IpActivator` sets the
interface up with ``ip`` (tests: networkd does not run in a namespace on the build machine). Network
commands (``ip``, ``ping``, ``getent``) run inside ``HostContext.netns`` when one is given.
"""

from __future__ import annotations

import json
import re
from typing import Any

from qx_common import log
from qx_common.errors import EnvironmentError_, QxError, UserError
from qx_common.run import CompletedProcess

from qx_console.backend import Nic, ProbeResult
from qx_console.hostconfig import NETWORK_FIELDS, HostConfig, check_lookup_name, check_ping_target, validate
from qx_console.host.context import HostContext

_log = log.get("console.host.network")


class Activator:
    """Makes the running network match the files; the file writing is not its business."""

    def activate(self, net: "Network", cfg: HostConfig) -> None:
        raise NotImplementedError

    def restart(self, net: "Network", cfg: HostConfig) -> None:
        self.activate(net, cfg)


class NetworkdActivator(Activator):
    def activate(self, net: "Network", cfg: HostConfig) -> None:
        net.cmd(["networkctl", "reload"], timeout=30)
        nics = list(cfg.network.nics) or [n.name for n in net.list_nics()]
        if nics:
            net.cmd(["networkctl", "reconfigure", *nics], timeout=30)
        net.set_running_hostname(cfg.hostname)

    def restart(self, net: "Network", cfg: HostConfig) -> None:
        net.cmd(["systemctl", "restart", "systemd-networkd.service"], timeout=60)
        self.activate(net, cfg)


class IpActivator(Activator):
    """Static addressing with ``ip`` (for namespaces without networkd). DHCP is not supported here."""

    def activate(self, net: "Network", cfg: HostConfig) -> None:
        n = cfg.network
        if not n.configured:
            return
        if n.ipv4.mode != "static" or n.extra_nics:
            raise EnvironmentError_("IpActivator only applies static IPv4 configurations on one adapter")
        dev = n.nic
        if n.vlan:
            net.cmd(["ip", "link", "add", "link", n.nic, "name", n.ifname, "type", "vlan", "id", str(n.vlan)],
                    check=False)
            dev = n.ifname
        net.cmd(["ip", "link", "set", dev, "up"])
        net.cmd(["ip", "-4", "addr", "flush", "dev", dev])
        net.cmd(["ip", "addr", "add", f"{n.ipv4.address}/{n.ipv4.prefix}", "dev", dev])
        if n.ipv4.gateway:
            net.cmd(["ip", "route", "replace", "default", "via", n.ipv4.gateway, "dev", dev])


class Network:
    def __init__(self, ctx: HostContext, activator: Activator | None = None) -> None:
        self.ctx = ctx
        self.activator = activator or NetworkdActivator()

    def cmd(self, argv: list[str], *, check: bool = True, timeout: float = 15) -> CompletedProcess[str]:
        """A network command: inside the namespace, if any."""
        return self.ctx.cmd(argv, check=check, timeout=timeout, net=True)

    def set_running_hostname(self, name: str) -> None:
        """sethostname(2) through procfs (no dependency on the optional 'hostname' package)."""
        try:
            self.ctx.path("proc/sys/kernel/hostname").write_text(name + "\n")
        except OSError as e:
            _log.warning("running hostname not changed (%s); it applies at the next boot", e)

    # -- what the host has -----------------------------------------------------------------------
    def addresses(self) -> list[tuple[str, str]]:
        try:
            data = json.loads(self.cmd(["ip", "-j", "addr", "show"], timeout=5).stdout or "[]")
        except (QxError, ValueError):
            return []
        out = []
        for link in data:
            if link.get("ifname") == "lo":
                continue
            for a in link.get("addr_info", []):
                if a.get("scope") == "global":
                    out.append((link["ifname"], a["local"]))
        return out

    def list_nics(self) -> list[Nic]:
        out = []
        if self.ctx.netns:
            data = json.loads(self.cmd(["ip", "-j", "link", "show"], timeout=5).stdout or "[]")
            for link in data:
                if link.get("link_type") == "ether":
                    out.append(Nic(link["ifname"], link.get("address", ""), "UP" in link.get("flags", [])
                                   and link.get("operstate") != "DOWN", None))
            return out
        base = self.ctx.path("sys/class/net")
        for d in sorted(base.iterdir()) if base.is_dir() else []:
            if not (d / "device").exists():  # physical NICs only (no lo, bridges, taps, veths of VMs)
                continue
            def rd(n: str) -> str:
                try:
                    return (d / n).read_text().strip()
                except OSError:
                    return ""
            speed = rd("speed")
            out.append(Nic(d.name, rd("address"), rd("operstate") == "up",
                           int(speed) if speed.lstrip("-").isdigit() and int(speed) > 0 else None))
        return out

    def default_gateways(self) -> list[str]:
        out: list[str] = []
        for fam in ("-4", "-6"):
            try:
                data = json.loads(self.cmd(["ip", "-j", fam, "route", "show", "default"], timeout=5).stdout or "[]")
            except (QxError, ValueError):
                continue
            out += [r["gateway"] for r in data if r.get("gateway") and r["gateway"] not in out]
        return out

    # -- the safe-apply primitives ---------------------------------------------------------------
    def write(self, cfg: HostConfig) -> None:
        validate(cfg)
        self.ctx.store.keep_previous()
        self.ctx.store.save(cfg, "console", NETWORK_FIELDS + ("hostname",))

    def activate(self) -> None:
        cfg, _ = self.ctx.load_config()
        self.activator.activate(self, cfg)

    def restore_previous(self) -> None:
        if not self.ctx.store.has_previous():
            raise UserError("there is no previous network configuration to restore",
                            hint="it is kept when a new configuration is applied from this console")
        self.ctx.store.restore_previous()
        self.activate()

    def has_previous(self) -> bool:
        return self.ctx.store.has_previous()

    def mark_pending(self, info: dict[str, Any] | None) -> None:
        if info is None:
            self.ctx.store.clear_pending()
        else:
            self.ctx.store.mark_pending(info)

    def pending(self) -> dict[str, Any] | None:
        return self.ctx.store.pending()

    def restart(self) -> None:
        cfg, _ = self.ctx.load_config()
        self.activator.restart(self, cfg)

    # -- probes ------------------------------------------------------------------------------------
    def ping(self, target: str, what: str, timeout_s: float = 2.0) -> ProbeResult:
        if (err := check_ping_target(target, what)):
            return ProbeResult(target, what, False, err.message)
        # "--": a target is never read as an option, whatever reached here.
        argv = ["ping", "-6" if ":" in target else "-4", "-c", "1", "-W", str(max(1, int(timeout_s))), "--",
                target]
        try:
            p = self.cmd(argv, check=False, timeout=timeout_s + 3)
        except QxError as e:
            return ProbeResult(target, what, False, str(e))
        if p.returncode == 0:
            m = re.search(r"time=([\d.]+) ms", p.stdout)
            return ProbeResult(target, what, True, f"answered in {m.group(1)} ms" if m else "answered")
        return ProbeResult(target, what, False, "no answer")

    def resolve(self, name: str) -> ProbeResult:
        if (err := check_lookup_name(name, "resolve")):
            return ProbeResult(name, "resolve", False, err.message)
        try:
            p = self.cmd(["getent", "ahosts", "--", name], check=False, timeout=10)
        except QxError as e:
            return ProbeResult(name, "resolve", False, str(e))
        addrs = sorted({line.split()[0] for line in p.stdout.splitlines() if line.strip()})
        if p.returncode == 0 and addrs:
            return ProbeResult(name, "resolve", True, ", ".join(addrs[:3]))
        return ProbeResult(name, "resolve", False, "name not resolved")
