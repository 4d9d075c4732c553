"""The real host backend: files under a root prefix, commands through ``qx_common.run``.

``LinuxBackend(root, netns=None, activator=...)``:

* ``root`` prefixes every path it reads or writes (``/proc``, ``/sys``, ``/etc/shadow``, the config on
  the data partition, the ESP), so tests run it against a temporary directory.
* ``netns`` runs the network commands (``ip``, ``ping``, ``getent``) inside that namespace.
* The :class:`Activator` is the only part that differs between a host and a test: writing the files is
  the same code; :class:`NetworkdActivator` then asks networkd to reload, :class:`IpActivator` sets the
  interface up with ``ip`` (tests: networkd does not run in a namespace on the build machine).
"""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path
from typing import Any

from qx_common import hostpaths, log
from qx_common.errors import EnvironmentError_, ExternalError, QxError, UserError
from qx_common.run import run, which
from qx_common.version import PRODUCT_NAME, product_version
from qx_update import bootentry

from qx_console import shadow
from qx_console.backend import (
    LOG_SOURCES, SERVICES, Health, HostBackend, HostStatus, Nic, NodeCert, ProbeResult, ProgressFn, ServiceState,
    Unavailable, UpdateState, check_ssh_restart,
)
from qx_console.clients import NODE_URL, NodeClient, UpdateClient
from qx_console.hostconfig import (
    HostConfig, NetworkConfig, Provenance, check_log_filter, check_lookup_name, check_ping_target, validate,
)
from qx_console.store import ConfigStore

_log = log.get("console.linux")

# What qx-node writes on its first start (qx_common.hostpaths, the one definition the node uses too).
# Relative: the backend's root directory is put in front.
NODE_CERT = hostpaths.node_cert().relative_to("/")
NODE_TOKEN = hostpaths.node_token().relative_to("/")


def read_node_cert(path: Path) -> NodeCert:
    """SHA-256 fingerprint (of the DER encoding, as ``openssl x509 -fingerprint -sha256``), names and
    expiry of the PEM certificate at ``path``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        raise Unavailable(f"qx-node has not created its TLS certificate yet ({path} is missing)",
                          hint="qx-node creates it when it starts: check qx-node under Services") from None
    except OSError as e:
        raise EnvironmentError_(f"{path}: cannot read the node certificate: {e.strerror}") from e
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as e:
        raise EnvironmentError_(f"{path}: not a PEM certificate ({e})",
                                hint="remove it and restart qx-node to create a new one") from e
    names: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [*san.get_values_for_type(x509.DNSName), *(str(a) for a in san.get_values_for_type(x509.IPAddress))]
    except x509.ExtensionNotFound:
        pass
    return NodeCert(sha256=cert.fingerprint(hashes.SHA256()).hex(":").upper(), names=tuple(names),
                    not_after=cert.not_valid_after_utc.strftime("%Y-%m-%d"))


def read_node_token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        raise Unavailable(f"qx-node has not created its API token yet ({path} is missing)",
                          hint="qx-node creates it when it starts: check qx-node under Services") from None
    except (OSError, UnicodeDecodeError) as e:
        raise EnvironmentError_(f"{path}: cannot read the API token: {getattr(e, 'strerror', None) or e}") from e
    if not token:
        raise EnvironmentError_(f"{path}: the API token is empty",
                                hint="remove the file and restart qx-node to create a new token")
    return token


class Activator:
    """Makes the running network match the files; the file writing is not its business."""

    def activate(self, backend: "LinuxBackend", cfg: HostConfig) -> None:
        raise NotImplementedError

    def restart(self, backend: "LinuxBackend", cfg: HostConfig) -> None:
        self.activate(backend, cfg)


class NetworkdActivator(Activator):
    def activate(self, backend: "LinuxBackend", cfg: HostConfig) -> None:
        backend.cmd(["networkctl", "reload"], timeout=30)
        nics = [cfg.network.nic] if cfg.network.configured else [n.name for n in backend.list_nics()]
        if nics:
            backend.cmd(["networkctl", "reconfigure", *nics], timeout=30)
        backend.set_running_hostname(cfg.hostname)

    def restart(self, backend: "LinuxBackend", cfg: HostConfig) -> None:
        backend.cmd(["systemctl", "restart", "systemd-networkd.service"], timeout=60)
        self.activate(backend, cfg)


class IpActivator(Activator):
    """Static addressing with ``ip`` (for namespaces without networkd). DHCP is not supported here."""

    def activate(self, backend: "LinuxBackend", cfg: HostConfig) -> None:
        n = cfg.network
        if not n.configured:
            return
        if n.ipv4.mode != "static":
            raise EnvironmentError_("IpActivator only applies static IPv4 configurations")
        dev = n.nic
        if n.vlan:
            backend.cmd(["ip", "link", "add", "link", n.nic, "name", n.ifname, "type", "vlan", "id", str(n.vlan)],
                        check=False)
            dev = n.ifname
        backend.cmd(["ip", "link", "set", dev, "up"])
        backend.cmd(["ip", "-4", "addr", "flush", "dev", dev])
        backend.cmd(["ip", "addr", "add", f"{n.ipv4.address}/{n.ipv4.prefix}", "dev", dev])
        if n.ipv4.gateway:
            backend.cmd(["ip", "route", "replace", "default", "via", n.ipv4.gateway, "dev", dev])


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
        self.root = Path(root)
        self.netns = netns
        self.store = ConfigStore(self.root)
        self.activator = activator or NetworkdActivator()
        self.node = node or NodeClient(NODE_URL, self.root / NODE_CERT, self.root / NODE_TOKEN)
        self.updates = updates or UpdateClient()
        self._cpu_prev: tuple[int, int] | None = None

    # -- helpers ------------------------------------------------------------------------------
    def cmd(self, argv: list[str], *, check: bool = True, timeout: float = 15, net: bool = True) -> Any:
        if net and self.netns:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        return run(argv, check=check, timeout=timeout)

    def set_running_hostname(self, name: str) -> None:
        """sethostname(2) through procfs (no dependency on the optional 'hostname' package)."""
        try:
            (self.root / "proc/sys/kernel/hostname").write_text(name + "\n")
        except OSError as e:
            _log.warning("running hostname not changed (%s); it applies at the next boot", e)

    def _read(self, rel: str, default: str = "") -> str:
        try:
            return (self.root / rel).read_text()
        except OSError:
            return default

    # -- status -------------------------------------------------------------------------------
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

    def _cpu(self) -> float | None:
        line = self._read("proc/stat").split("\n", 1)[0].split()
        if len(line) < 5 or line[0] != "cpu":
            return None
        vals = [int(x) for x in line[1:]]
        idle, total = vals[3] + (vals[4] if len(vals) > 4 else 0), sum(vals)
        prev, self._cpu_prev = self._cpu_prev, (idle, total)
        if prev is None or total == prev[1]:
            return None
        return 100.0 * (1 - (idle - prev[0]) / (total - prev[1]))

    def _mem(self) -> tuple[int, int]:
        info = {}
        for line in self._read("proc/meminfo").splitlines():
            k, _, v = line.partition(":")
            info[k] = int(v.split()[0]) * 1024 if v.split() else 0
        total = info.get("MemTotal", 0)
        return total - info.get("MemAvailable", total), total

    def slot(self) -> tuple[str, bool | None]:
        m = re.search(r"root=PARTLABEL=root-([ab])\b", self._read("proc/cmdline"))
        if not m:
            return "?", None
        slot = m.group(1)
        for esp in ("efi", "boot", "boot/efi"):
            d = self.root / esp / bootentry.ENTRIES_DIR
            if d.is_dir():
                for p in d.iterdir():
                    e = bootentry.parse_entry_name(p.name)
                    if e and e.slot == slot:
                        return slot.upper(), e.blessed
        return slot.upper(), None

    def status(self) -> HostStatus:
        slot, blessed = self.slot()
        used, total = self._mem()
        uptime = float((self._read("proc/uptime", "0").split() or ["0"])[0])
        hostname = self._read("proc/sys/kernel/hostname").strip() or socket.gethostname()
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
        channel, pending, available, checked, udetail = "", "", "", "", ""
        try:
            us = self.updates.status()
            channel, pending, available, checked = us.channel, us.pending, us.available, us.last_check
        except QxError as e:
            udetail = f"not available: {e}"
        cert: NodeCert | None = None
        cert_detail = ""
        try:
            cert = self.node_certificate()
        except Unavailable:
            cert_detail = "not created yet (qx-node has not started)"
        except QxError as e:
            cert_detail = e.message
        cfg, prov = self.load_config()
        return HostStatus(
            product=PRODUCT_NAME, version=product_version(self.root), hostname=hostname,
            addresses=self.addresses(), active_slot=slot, blessed=blessed, cpu_percent=self._cpu(),
            mem_used=used, mem_total=total, vms_running=vms, node=node, libvirt=libvirt,
            update_channel=channel or cfg.update_channel, pending_update=pending, available_update=available,
            update_check=checked, update_detail=udetail, uptime_s=uptime, node_cert=cert,
            node_cert_detail=cert_detail, provenance=prov,
        )

    # -- configuration -----------------------------------------------------------------------
    def load_config(self) -> tuple[HostConfig, Provenance]:
        try:
            cfg = self.store.load()
        except (QxError, ValueError) as e:
            _log.warning("stored configuration unreadable (%s); showing defaults", e)
            cfg = HostConfig()
        prov = self.store.provenance()
        return cfg, prov

    def save_config(self, cfg: HostConfig, fields: tuple[str, ...]) -> None:
        validate(cfg)
        old, _ = self.load_config()
        self.store.save(cfg, "console", fields)
        if cfg.hostname != old.hostname:
            self.set_running_hostname(cfg.hostname)

    def list_nics(self) -> list[Nic]:
        out = []
        if self.netns:
            data = json.loads(self.cmd(["ip", "-j", "link", "show"], timeout=5).stdout or "[]")
            for link in data:
                if link.get("link_type") == "ether":
                    out.append(Nic(link["ifname"], link.get("address", ""), "UP" in link.get("flags", [])
                                   and link.get("operstate") != "DOWN", None))
            return out
        base = self.root / "sys/class/net"
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

    # -- network -------------------------------------------------------------------------------
    def write_network(self, cfg: HostConfig) -> None:
        validate(cfg)
        self.store.keep_previous()
        from qx_console.hostconfig import NETWORK_FIELDS
        self.store.save(cfg, "console", NETWORK_FIELDS + ("hostname",))

    def activate_network(self) -> None:
        cfg, _ = self.load_config()
        self.activator.activate(self, cfg)

    def restore_previous_network(self) -> None:
        if not self.store.has_previous():
            raise UserError("there is no previous network configuration to restore",
                            hint="it is kept when a new configuration is applied from this console")
        self.store.restore_previous()
        self.activate_network()

    def has_previous_network(self) -> bool:
        return self.store.has_previous()

    def mark_pending(self, info: dict[str, Any] | None) -> None:
        if info is None:
            self.store.clear_pending()
        else:
            self.store.mark_pending(info)

    def pending(self) -> dict[str, Any] | None:
        return self.store.pending()

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

    def default_gateways(self) -> list[str]:
        out: list[str] = []
        for fam in ("-4", "-6"):
            try:
                data = json.loads(self.cmd(["ip", "-j", fam, "route", "show", "default"], timeout=5).stdout or "[]")
            except (QxError, ValueError):
                continue
            out += [r["gateway"] for r in data if r.get("gateway") and r["gateway"] not in out]
        return out

    def restart_network(self) -> None:
        cfg, _ = self.load_config()
        self.activator.restart(self, cfg)

    # -- security --------------------------------------------------------------------------------
    @property
    def shadow_file(self) -> Path:
        return self.root / "etc/shadow"

    def verify_root_password(self, password: str) -> bool:
        return shadow.verify(self.shadow_file, "root", password)

    def set_root_password(self, password: str) -> None:
        shadow.set_password(self.shadow_file, "root", password)

    def set_ssh(self, enabled: bool, timeout_min: int) -> None:
        cfg, _ = self.load_config()
        from dataclasses import replace

        from qx_console.hostconfig import SshConfig
        new = replace(cfg, ssh=SshConfig(enabled=enabled, timeout_min=timeout_min))
        validate(new)
        if enabled:
            self.cmd(["systemctl", "start", "ssh.service"], net=False, timeout=30)
            self.cmd(["systemctl", "stop", "qx-ssh-off.timer"], check=False, net=False)
            if timeout_min:
                # systemd keeps the off-timer, so it fires even if the console restarts meanwhile.
                self.cmd(["systemd-run", "--unit", "qx-ssh-off", f"--on-active={timeout_min}min",
                          "systemctl", "stop", "ssh.service"], net=False, timeout=30)
        else:
            self.cmd(["systemctl", "stop", "ssh.service", "qx-ssh-off.timer"], check=False, net=False, timeout=30)
        self.store.save(new, "console", ("ssh",))

    def ssh_state(self) -> ServiceState:
        return self._unit_state("ssh")

    def ssh_fingerprints(self) -> list[str]:
        out = []
        d = self.root / "var/lib/quantix/config/ssh/etc/ssh"
        for pub in sorted(d.glob("ssh_host_*_key.pub")) if d.is_dir() else []:
            try:
                line = run(["ssh-keygen", "-l", "-f", str(pub)], timeout=10).stdout.strip()
            except QxError as e:
                line = f"{pub.name}: {e}"
            out.append(line)
        return out

    def node_certificate(self) -> NodeCert:
        return read_node_cert(self.root / NODE_CERT)

    def node_api_token(self) -> str:
        return read_node_token(self.root / NODE_TOKEN)

    # -- logs and services ---------------------------------------------------------------------
    def logs(self, source: str, grep: str = "", lines: int = 200) -> list[str]:
        if source not in LOG_SOURCES:
            raise UserError(f"log source: '{source}' is unknown", hint="choose one of " + ", ".join(LOG_SOURCES))
        if grep and (err := check_log_filter(grep)):
            raise UserError(f"{err.field}: {err.message}", hint=err.hint)
        if which("journalctl") is None:
            raise Unavailable("journalctl is not installed on this host")
        argv = ["journalctl", "--no-pager", "-q", "-o", "short-iso", "-n", str(lines)]
        if self.root != Path("/"):
            argv += ["--root", str(self.root)]
        argv += {"system": [], "kernel": ["-k"], "qx-node": ["-u", "qx-node.service"],
                 "qx-update": ["-u", "qx-update*"]}[source]
        if grep:
            argv += [f"--grep={grep}", "--case-sensitive=no"]
        p = run(argv, check=False, timeout=20)
        # journalctl exits 1 when --grep matched nothing, but also when it could not search: only
        # silence on stderr means "no entries".
        if p.returncode not in (0, 1) or (p.returncode == 1 and p.stderr.strip()):
            raise ExternalError(f"journalctl failed: {p.stderr.strip()[-200:]}")
        return p.stdout.splitlines()

    def _unit_state(self, name: str) -> ServiceState:
        try:
            p = run(["systemctl", "show", f"{name}.service", "-p", "ActiveState,SubState,Description"],
                    check=False, timeout=10)
        except QxError as e:
            return ServiceState(name, "unknown", str(e))
        kv = dict(line.partition("=")[::2] for line in p.stdout.splitlines())
        return ServiceState(name, kv.get("ActiveState", "unknown"), kv.get("SubState", ""))

    def services(self) -> list[ServiceState]:
        return [self._unit_state(s) for s in SERVICES]

    def restart_service(self, name: str) -> None:
        """Restart ``name``. SSH follows its own setting: refused while SSH access is off, and only
        restarted while it runs (``try-restart``), so a restart never turns SSH on behind the off-timer."""
        if name not in SERVICES:
            raise UserError(f"service: '{name}' cannot be restarted from here", hint="pick one from the list")
        if name == "ssh":
            cfg, _ = self.load_config()
            check_ssh_restart(cfg.ssh.enabled, self.ssh_state().active)
            run(["systemctl", "try-restart", "ssh.service"], timeout=90)
            return
        run(["systemctl", "restart", f"{name}.service"], timeout=90)

    # -- updates -------------------------------------------------------------------------------
    def update_status(self) -> UpdateState:
        return self.updates.status()

    def update_check(self) -> UpdateState:
        return self.updates.check()

    def update_apply(self, progress: ProgressFn) -> str:
        return self.updates.apply(progress)

    def update_rollback(self) -> str:
        return self.updates.rollback()

    def set_channel(self, name: str) -> None:
        from dataclasses import replace
        cfg, _ = self.load_config()
        new = replace(cfg, update_channel=name)
        validate(new)
        self.updates.set_channel(name)
        self.store.save(new, "console", ("update_channel",))

    # -- system --------------------------------------------------------------------------------
    def reset_config(self) -> None:
        self.store.reset()
        try:
            self.activate_network()
        except QxError as e:
            _log.warning("network not re-activated after reset: %s", e)

    def power(self, action: str) -> None:
        if action not in ("reboot", "poweroff"):
            raise UserError(f"power action: '{action}' is unknown", hint="use reboot or poweroff")
        run(["systemctl", action], timeout=30)


def wait_until(cond: Any, timeout_s: float, step_s: float = 0.05) -> bool:
    """Poll ``cond()`` until true or the deadline (helper for callers and tests)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step_s)
    return bool(cond())
