"""The host-configuration schema of Quantix OS and its validation — the ONE place these rules live.

The console, the installer's answer file and the node API all build a :class:`HostConfig` through
:func:`parse_host_config` (from a plain dict, e.g. JSON or TOML) or construct the dataclasses directly
and call :func:`validate`. Nothing is written anywhere before validation passed.

Invariants:

* Every rule reports a :class:`FieldError` naming the field with its dotted path (``network.ipv4.gateway``),
  what is wrong and how to fix it. :class:`ValidationError` (a :class:`~qx_common.errors.UserError`)
  carries all of them at once, so a form or an answer file shows every problem in one pass.
* Unknown keys are refused (a typo in an answer file must not be silently ignored).
* Where a setting came from — ``answer-file``, ``console``, ``api``, ``dhcp`` or ``default`` — is kept
  beside the configuration as :data:`Provenance` (field path -> source), never inside the values.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from qx_common.errors import UserError
from qx_update import CHANNELS

SOURCES = ("installer", "answer-file", "console", "api", "dhcp", "default")
Provenance = dict[str, str]

_HOST_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
IFNAMSIZ = 15  # the kernel's limit on interface names (IFNAMSIZ - 1), VLAN devices included
HOSTNAME_MAX = 64  # HOST_NAME_MAX: sethostname(2) refuses longer names
DOMAIN_MAX = 253
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
DEFAULT_HOSTNAME = "quantix"
DEFAULT_CHANNEL = "stable"


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str
    hint: str = ""

    def __str__(self) -> str:
        # ASCII only: this text is shown on the physical console, whose fonts lack typographic dashes.
        return f"{self.field}: {self.message}" + (f" - {self.hint}" if self.hint else "")


class ValidationError(UserError):
    """One or more fields are invalid; ``errors`` lists them all (first one is the message)."""

    def __init__(self, errors: list[FieldError]) -> None:
        assert errors
        super().__init__(str(errors[0]), hint=errors[0].hint or None)
        self.errors = errors


@dataclass(frozen=True)
class IPv4Config:
    mode: str = "dhcp"  # dhcp | static
    address: str = ""
    prefix: int = 24
    gateway: str = ""


@dataclass(frozen=True)
class IPv6Config:
    mode: str = "auto"  # off | auto | static
    address: str = ""
    prefix: int = 64
    gateway: str = ""


# How several management adapters work together: "none" = each takes DHCP on its own (only dynamic
# addressing, no VLAN); a team is one bond device over all of them (active-backup needs no switch
# support; 802.3ad needs LACP on the switch ports).
TEAM_MODES = ("none", "active-backup", "802.3ad")
BOND_IFNAME = "qxbond0"
MAX_NICS = 8
MAX_VM_VLANS = 64
SEARCH_DOMAINS_MAX = 6


@dataclass(frozen=True)
class NetworkConfig:
    nic: str = ""  # empty: the factory default (DHCP on every wired NIC)
    vlan: int | None = None
    ipv4: IPv4Config = field(default_factory=IPv4Config)
    ipv6: IPv6Config = field(default_factory=IPv6Config)
    dns: tuple[str, ...] = ()
    search_domain: str = ""  # one or more domains, separated by spaces (networkd's Domains=)
    extra_nics: tuple[str, ...] = ()  # further management adapters beside ``nic``
    team: str = "none"  # one of TEAM_MODES; a team bonds ``nic`` and ``extra_nics``
    # VLANs of the management adapter (or team) offered to VMs: each is a VLAN device on the carrier and a
    # bridge without host addresses (vm_vlan_bridge), which qx-node's libvirt networks put VM NICs on.
    vm_vlans: tuple[int, ...] = ()

    @property
    def configured(self) -> bool:
        return bool(self.nic)

    @property
    def nics(self) -> tuple[str, ...]:
        """Every management adapter, ``nic`` first (empty for the factory default)."""
        return (self.nic, *self.extra_nics) if self.nic else ()

    @property
    def teamed(self) -> bool:
        return self.team != "none" and bool(self.extra_nics)

    @property
    def carrier(self) -> str:
        """The device the VLAN (or the addresses) sit on: the bond of a team, else the adapter."""
        return BOND_IFNAME if self.teamed else self.nic

    @property
    def ifname(self) -> str:
        """The interface that carries the management addresses (the VLAN device if there is one)."""
        return f"{self.carrier}.{self.vlan}" if self.vlan else self.carrier

    @staticmethod
    def vm_vlan_device(vid: int) -> str:
        """The VLAN device of VM VLAN ``vid`` (qxvlan4094 at most: within Linux's 15 characters)."""
        return f"qxvlan{vid}"

    @staticmethod
    def vm_vlan_bridge(vid: int) -> str:
        """The bridge VMs on VLAN ``vid`` join (qx-node names it in its libvirt network)."""
        return f"qxbr{vid}"

    @property
    def search_domains(self) -> tuple[str, ...]:
        return tuple(self.search_domain.split())


@dataclass(frozen=True)
class SshConfig:
    enabled: bool = False
    timeout_min: int = 60  # 0: stays on until turned off


@dataclass(frozen=True)
class HostConfig:
    hostname: str = DEFAULT_HOSTNAME
    network: NetworkConfig = field(default_factory=NetworkConfig)
    ssh: SshConfig = field(default_factory=SshConfig)
    update_channel: str = DEFAULT_CHANNEL
    # Lockdown mode (the file qx_common.hostpaths.lockdown_file is what SSH and qx-node honour; this
    # records it beside the other settings): SSH off, qx-node's host configuration routes refuse (423).
    lockdown: bool = False


# ---------------------------------------------------------------------------------------------
# Rules, one function per kind of value. Each returns a FieldError or None.


def parse_int(text: str, fld: str, hint: str, *, required: bool = True) -> tuple[int | None, FieldError | None]:
    """Operator text -> number: ``(value, None)`` or ``(None, error)``. Only ASCII digits count (``int()``
    also takes '٣' or '²'-like digits and spaces); empty text is an error when ``required``, else None."""
    t = text.strip()
    if not t:
        return None, (FieldError(fld, "is empty", hint) if required else None)
    if not (t.isascii() and t.isdigit()):
        return None, FieldError(fld, f"'{t}' is not a number", hint)
    return int(t), None


def check_hostname(name: str, fld: str = "hostname", max_len: int = HOSTNAME_MAX) -> FieldError | None:
    """A host name (at most :data:`HOSTNAME_MAX` characters) or, with ``max_len=DOMAIN_MAX``, a domain."""
    if not name:
        return FieldError(fld, "is empty", "enter a name such as 'host1' or 'host1.example.com'")
    if len(name) > max_len:
        return FieldError(fld, f"is {len(name)} characters long", f"use at most {max_len} characters")
    bad = sorted({c for c in name if not (c.isascii() and (c.isalnum() or c in "-."))})
    if bad:
        shown = " ".join(repr(c) for c in bad)
        return FieldError(fld, f"contains illegal character(s) {shown}",
                          "use only letters a-z, digits and '-', with '.' between labels")
    labels = name.lower().split(".")
    for label in labels:
        if not _HOST_LABEL.match(label):
            return FieldError(fld, f"label '{label}' is not valid",
                              "each label is 1-63 characters and does not start or end with '-'")
    if labels[-1].isdigit():
        # RFC 1123: an all-numeric name (or last label) reads as an address, not a name.
        return FieldError(fld, f"'{name}' is all digits at the end, like an address",
                          "start the name with a letter, e.g. 'host1'")
    return None


def check_lookup_name(name: str, fld: str = "test.name") -> FieldError | None:
    """A name to resolve in the network test: a DNS name (never something a command takes as an option)."""
    return check_hostname(name, fld, max_len=DOMAIN_MAX)


def check_ping_target(value: str, fld: str = "test.target") -> FieldError | None:
    """An address or DNS name to ping in the network test (never something a command takes as an option)."""
    if not value:
        return FieldError(fld, "is empty", "enter an IP address or a host name")
    if ":" in value or value.replace(".", "").isdigit():
        try:
            ipaddress.ip_address(value)
        except ValueError:
            return FieldError(fld, f"'{value}' is not an IP address", "write e.g. 192.0.2.1 or 2001:db8::1")
        return None
    return check_hostname(value, fld, max_len=DOMAIN_MAX)


def check_log_filter(pattern: str, fld: str = "logs.filter") -> FieldError | None:
    """A journal filter (a regular expression, as ``journalctl --grep`` takes it); empty: no filter."""
    if len(pattern) > 200:
        return FieldError(fld, f"is {len(pattern)} characters long", "use at most 200 characters")
    if any(not c.isprintable() for c in pattern):
        return FieldError(fld, "contains control characters", "type the text to search for")
    try:
        re.compile(pattern)
    except re.error as e:
        return FieldError(fld, f"is not a valid pattern ({e.msg})",
                          "type plain text, or escape special characters such as ( [ * with a backslash")
    return None


def check_ssh_timeout(value: object, fld: str = "ssh.timeout_min") -> FieldError | None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 1440:
        return FieldError(fld, f"'{value}' is not a timeout",
                          "use minutes from 1 to 1440, or 0 to keep SSH on until turned off")
    return None


def _unusable(addr: ipaddress.IPv4Address | ipaddress.IPv6Address, link_local_ok: bool) -> str:
    """Why ``addr`` cannot be a host's address, gateway or DNS server on the wire ("" if it can)."""
    if addr.is_unspecified:
        return "is the unspecified address"
    if addr.is_loopback:
        return "is a loopback address (this host itself)"
    if addr.is_multicast:
        return "is a multicast address"
    if addr.is_link_local and not link_local_ok:
        return "is a link-local address (assigned by itself, not routed)"
    if isinstance(addr, ipaddress.IPv4Address) and addr == ipaddress.IPv4Address("255.255.255.255"):
        return "is the broadcast address"
    if addr.is_reserved and not (addr.is_link_local and link_local_ok):
        return "is in a reserved range"
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return "is an IPv4-mapped address"
    return ""


def check_ipv4(value: str, fld: str) -> FieldError | None:
    """A unicast IPv4 address a host, gateway or DNS server can have (no loopback, link-local,
    multicast, reserved or broadcast address)."""
    try:
        addr = ipaddress.IPv4Address(value)
    except ValueError:
        return FieldError(fld, f"'{value}' is not an IPv4 address", "write four numbers 0-255, e.g. 192.168.1.10")
    if (why := _unusable(addr, False)):
        return FieldError(fld, f"'{value}' {why}", "use a unicast address of your network, e.g. 192.168.1.10")
    return None


def check_ipv6(value: str, fld: str, *, link_local_ok: bool = False) -> FieldError | None:
    """A unicast IPv6 address; link-local (fe80::/10) only where ``link_local_ok`` (a gateway)."""
    try:
        addr = ipaddress.IPv6Address(value)
    except ValueError:
        return FieldError(fld, f"'{value}' is not an IPv6 address", "write it like 2001:db8::10")
    if (why := _unusable(addr, link_local_ok)):
        return FieldError(fld, f"'{value}' {why}", "use a global or unique-local address, e.g. 2001:db8::10")
    return None


def check_ip(value: str, fld: str) -> FieldError | None:
    if ":" in value:
        return check_ipv6(value, fld)
    return check_ipv4(value, fld)


def check_prefix(value: int, maximum: int, fld: str) -> FieldError | None:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= maximum:
        return FieldError(fld, f"'{value}' is not a valid prefix length", f"use a number from 1 to {maximum} (e.g. 24)"
                          if maximum == 32 else f"use a number from 1 to {maximum} (e.g. 64)")
    return None


def check_vlan(value: int | None, fld: str = "network.vlan") -> FieldError | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 4094:
        return FieldError(fld, f"'{value}' is not a usable VLAN id",
                          "use 1-4094 (0 and 4095 are reserved), or leave it empty for no VLAN")
    return None


def check_domain(value: str, fld: str) -> FieldError | None:
    if not value:
        return None
    return check_hostname(value, fld, max_len=DOMAIN_MAX)


def _check_vm_vlans(n: NetworkConfig) -> list[FieldError]:
    """VM VLANs: valid ids, each once, at most MAX_VM_VLANS, never the management VLAN itself, and on an
    adapter or a team (several adapters each on DHCP have no one device to carry them)."""
    errs: list[FieldError] = []
    bad = [v for v in n.vm_vlans if check_vlan(v, "network.vm_vlans") is not None]
    if bad:
        errs.append(FieldError("network.vm_vlans", f"'{bad[0]}' is not a usable VLAN id", "use 1-4094"))
    if len(set(n.vm_vlans)) != len(n.vm_vlans):
        errs.append(FieldError("network.vm_vlans", "lists a VLAN twice", "list each VLAN once"))
    if len(n.vm_vlans) > MAX_VM_VLANS:
        errs.append(FieldError("network.vm_vlans", f"{len(n.vm_vlans)} VLANs; at most {MAX_VM_VLANS}",
                               "remove the VLANs no VM uses"))
    if n.vlan is not None and n.vlan in n.vm_vlans:
        errs.append(FieldError("network.vm_vlans", f"VLAN {n.vlan} is the management VLAN",
                               "VMs join the management network through its own bridge; pick another VLAN"))
    if n.vm_vlans and n.extra_nics and n.team == "none":
        errs.append(FieldError("network.vm_vlans", "several adapters without a team cannot carry VM VLANs",
                               "form a team (active-backup or 802.3ad), or keep one adapter"))
    return errs


def _check_network(n: NetworkConfig) -> list[FieldError]:
    errs: list[FieldError] = []
    if not n.configured:
        if n.vm_vlans:
            errs.append(FieldError("network.vm_vlans", "VM VLANs need the management adapter chosen",
                                   "choose the management network adapter first (F2 > Network)"))
        return errs  # factory default: nothing else to check
    if not _IFNAME.match(n.nic):
        errs.append(FieldError("network.nic", f"'{n.nic}' is not an interface name",
                               "pick one of the listed network adapters"))
    errs += _check_adapters(n)
    errs += _check_vm_vlans(n)
    if (e := check_vlan(n.vlan)):
        errs.append(e)
    elif n.vlan and len(n.ifname) > IFNAMSIZ:
        errs.append(FieldError("network.vlan", f"the VLAN interface '{n.ifname}' would have {len(n.ifname)} "
                               f"characters; Linux allows {IFNAMSIZ}",
                               f"use a VLAN id of at most {max(IFNAMSIZ - len(n.carrier) - 1, 0)} digits on "
                               f"{n.carrier}"))
    v4 = n.ipv4
    if v4.mode not in ("dhcp", "static"):
        errs.append(FieldError("network.ipv4.mode", f"'{v4.mode}' is not a mode", "use 'dhcp' or 'static'"))
    elif v4.mode == "static":
        e_addr = check_ipv4(v4.address, "network.ipv4.address")
        e_pfx = check_prefix(v4.prefix, 32, "network.ipv4.prefix")
        errs += [e for e in (e_addr, e_pfx) if e]
        if v4.gateway:
            e_gw = check_ipv4(v4.gateway, "network.ipv4.gateway")
            if e_gw:
                errs.append(e_gw)
            elif not e_addr and not e_pfx:
                net = ipaddress.IPv4Interface(f"{v4.address}/{v4.prefix}").network
                gw = ipaddress.IPv4Address(v4.gateway)
                if gw not in net:
                    errs.append(FieldError("network.ipv4.gateway", f"{gw} is outside the subnet {net}",
                                           f"use an address inside {net}, or correct the address/prefix"))
                elif gw == ipaddress.IPv4Address(v4.address):
                    errs.append(FieldError("network.ipv4.gateway", "is the host's own address",
                                           "enter the router's address"))
        if not e_addr and not e_pfx and v4.prefix < 31:
            iface = ipaddress.IPv4Interface(f"{v4.address}/{v4.prefix}")
            if iface.ip in (iface.network.network_address, iface.network.broadcast_address):
                errs.append(FieldError("network.ipv4.address",
                                       f"{iface.ip} is the network or broadcast address of {iface.network}",
                                       "pick a host address inside the subnet"))
    v6 = n.ipv6
    if v6.mode not in ("off", "auto", "static"):
        errs.append(FieldError("network.ipv6.mode", f"'{v6.mode}' is not a mode", "use 'off', 'auto' or 'static'"))
    elif v6.mode == "static":
        e6 = check_ipv6(v6.address, "network.ipv6.address")
        p6 = check_prefix(v6.prefix, 128, "network.ipv6.prefix")
        errs += [e for e in (e6, p6) if e]
        if v6.gateway:
            g6 = check_ipv6(v6.gateway, "network.ipv6.gateway", link_local_ok=True)
            if g6:
                errs.append(g6)
            elif not e6 and not p6:
                net6 = ipaddress.IPv6Interface(f"{v6.address}/{v6.prefix}").network
                gw6 = ipaddress.IPv6Address(v6.gateway)
                if gw6 not in net6 and not gw6.is_link_local:
                    errs.append(FieldError("network.ipv6.gateway", f"{gw6} is outside the subnet {net6}",
                                           f"use an address inside {net6} or a link-local fe80:: address"))
    for i, d in enumerate(n.dns):
        if (e := check_ip(d, f"network.dns[{i}]")):
            errs.append(FieldError("network.dns", e.message, "list DNS servers as IP addresses, comma-separated"))
            break
    if len(n.dns) > 8:
        errs.append(FieldError("network.dns", f"{len(n.dns)} DNS servers are listed", "list at most 8"))
    if not n.dns and v4.mode == "static":
        errs.append(FieldError("network.dns", "no DNS server is given",
                               "enter at least one DNS server address (with a static address nothing supplies one)"))
    domains = n.search_domains
    if len(domains) > SEARCH_DOMAINS_MAX:
        errs.append(FieldError("network.search_domain",
                               f"{len(domains)} search domains are listed; at most {SEARCH_DOMAINS_MAX} are used",
                               f"list at most {SEARCH_DOMAINS_MAX}"))
    for d in domains:
        if (e := check_domain(d, "network.search_domain")):
            errs.append(e)
            break
    return errs


def _check_adapters(n: NetworkConfig) -> list[FieldError]:
    """Several adapters: each a real name, none twice; without a team each takes DHCP on its own, so a
    static address or a VLAN (one device to put it on) needs a single adapter or a team."""
    errs: list[FieldError] = []
    if n.team not in TEAM_MODES:
        errs.append(FieldError("network.team", f"'{n.team}' is not a team mode", "use " + ", ".join(TEAM_MODES)))
    for x in n.extra_nics:
        if not _IFNAME.match(x):
            errs.append(FieldError("network.extra_nics", f"'{x}' is not an interface name",
                                   "pick the adapters from the listed ones"))
            return errs
    if len(set(n.nics)) != len(n.nics):
        errs.append(FieldError("network.extra_nics", "lists an adapter twice", "check each adapter once"))
    if len(n.nics) > MAX_NICS:
        errs.append(FieldError("network.extra_nics", f"{len(n.nics)} adapters are chosen; at most {MAX_NICS} work",
                               f"use at most {MAX_NICS}"))
    if n.team in TEAM_MODES[1:] and not n.extra_nics:
        errs.append(FieldError("network.team", f"a team ({n.team}) needs at least two adapters",
                               "check a second adapter, or set the team to 'none'"))
    if n.extra_nics and n.team == "none" and (n.ipv4.mode == "static" or n.ipv6.mode == "static" or n.vlan):
        what = "a VLAN" if n.vlan else "a static address"
        errs.append(FieldError("network.extra_nics", f"several adapters without a team cannot carry {what}",
                               "form a team (active-backup or 802.3ad), or keep one adapter"))
    return errs


def validate(cfg: HostConfig) -> None:
    """Raise :class:`ValidationError` listing every invalid field of ``cfg``."""
    errs: list[FieldError] = []
    if (e := check_hostname(cfg.hostname)):
        errs.append(e)
    errs += _check_network(cfg.network)
    if (e := check_ssh_timeout(cfg.ssh.timeout_min)):
        errs.append(e)
    if cfg.update_channel not in CHANNELS:  # the release contract's channels (qx_update), not a pattern
        errs.append(FieldError("update_channel", f"'{cfg.update_channel}' is not a channel name",
                               f"use one of: {', '.join(CHANNELS)}"))
    if errs:
        raise ValidationError(errs)


# ---------------------------------------------------------------------------------------------
# Dict <-> dataclasses (answer files, JSON on disk, API bodies).


def _take(d: Mapping[str, Any], allowed: dict[str, type | tuple[type, ...]], where: str) -> dict[str, Any]:
    if not isinstance(d, Mapping):
        raise ValidationError([FieldError(where or "config", "must be a table/object", "")])
    errs: list[FieldError] = []
    out: dict[str, Any] = {}
    for k, v in d.items():
        path = f"{where}.{k}" if where else k
        if k not in allowed:
            errs.append(FieldError(path, "is not a known setting",
                                   "known here: " + ", ".join(sorted(allowed))))
            continue
        if not isinstance(v, allowed[k]) or (isinstance(v, bool) and allowed[k] is int):
            want = allowed[k]
            names = "/".join(t.__name__ for t in (want if isinstance(want, tuple) else (want,)))
            errs.append(FieldError(path, f"has the wrong type ({type(v).__name__})", f"expected {names}"))
            continue
        out[k] = v
    if errs:
        raise ValidationError(errs)
    return out


def parse_network(d: Mapping[str, Any], where: str = "network") -> NetworkConfig:
    top = _take(d, {"nic": str, "vlan": (int, type(None)), "ipv4": dict, "ipv6": dict,
                    "dns": list, "search_domain": str, "extra_nics": list, "team": str, "vm_vlans": list}, where)
    v4 = _take(top.pop("ipv4", {}), {"mode": str, "address": str, "prefix": int, "gateway": str}, f"{where}.ipv4")
    v6 = _take(top.pop("ipv6", {}), {"mode": str, "address": str, "prefix": int, "gateway": str}, f"{where}.ipv6")
    # A static address needs its prefix written out: a missing one is an error, never a silent /24 or /64.
    missing = [FieldError(f"{where}.{fam}.prefix", "is missing for a static address",
                          f"add prefix = {default} (or the length of your subnet)")
               for fam, d, default in (("ipv4", v4, 24), ("ipv6", v6, 64))
               if d.get("mode") == "static" and "prefix" not in d]
    if missing:
        raise ValidationError(missing)
    dns = top.pop("dns", [])
    if not all(isinstance(x, str) for x in dns):
        raise ValidationError([FieldError(f"{where}.dns", "must be a list of addresses", "e.g. [\"192.0.2.53\"]")])
    extra = top.pop("extra_nics", [])
    if not all(isinstance(x, str) for x in extra):
        raise ValidationError([FieldError(f"{where}.extra_nics", "must be a list of adapter names",
                                          "e.g. [\"eno2\"]")])
    vm_vlans = top.pop("vm_vlans", [])
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in vm_vlans):
        raise ValidationError([FieldError(f"{where}.vm_vlans", "must be a list of VLAN ids", "e.g. [20, 30]")])
    return NetworkConfig(ipv4=IPv4Config(**v4), ipv6=IPv6Config(**v6), dns=tuple(dns), extra_nics=tuple(extra),
                         vm_vlans=tuple(vm_vlans), **top)


def parse_host_config(d: Mapping[str, Any]) -> HostConfig:
    """Build and validate a :class:`HostConfig` from a dict (answer file / JSON / API body)."""
    top = _take(d, {"hostname": str, "network": dict, "ssh": dict, "update_channel": str, "lockdown": bool}, "")
    net = parse_network(top.pop("network", {}))
    ssh = SshConfig(**_take(top.pop("ssh", {}), {"enabled": bool, "timeout_min": int}, "ssh"))
    cfg = HostConfig(network=net, ssh=ssh, **top)
    validate(cfg)
    return cfg


def to_dict(cfg: HostConfig) -> dict[str, Any]:
    d = asdict(cfg)
    d["network"]["dns"] = list(cfg.network.dns)
    d["network"]["extra_nics"] = list(cfg.network.extra_nics)
    d["network"]["vm_vlans"] = list(cfg.network.vm_vlans)
    return d


def parse_dns_list(text: str) -> tuple[str, ...]:
    """Operator input 'a, b c' -> ('a', 'b', 'c')."""
    return tuple(x for x in re.split(r"[\s,;]+", text.strip()) if x)


# Which provenance keys a change of each part touches (the console records them as "console").
NETWORK_FIELDS = ("network.nic", "network.vlan", "network.ipv4", "network.ipv6", "network.dns",
                  "network.search_domain", "network.extra_nics", "network.team", "network.vm_vlans")


def parse_domain_list(text: str) -> str:
    """Operator input 'a.example, b.example' -> 'a.example b.example' (the schema's search_domain)."""
    return " ".join(parse_dns_list(text))
