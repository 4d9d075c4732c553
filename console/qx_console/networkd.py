"""Render a :class:`~qx_console.hostconfig.NetworkConfig` as systemd-networkd files (pure functions).

The output is a dict ``{filename: text}`` for the persistent network directory
(``/var/lib/quantix/config/network``, which ``/etc/systemd/network`` points to). Files are named
``10-quantix-*`` so they sort before the factory default ``99-quantix-default.network`` in
``/usr/lib/systemd/network`` and win for the chosen NIC. An unconfigured network (no NIC chosen)
renders to no files at all: the factory default (DHCP on every wired NIC) applies.

VM VLANs (``network.vm_vlans``) ride on the same carrier: the carrier's ``.network`` lists each VLAN
device (``VLAN=qxvlanN``: networkd attaches a VLAN only through the .network of its parent, which is why
they are rendered here and nowhere else), each VLAN device is the one port of its bridge ``qxbrN``, and
neither has a host address (``LinkLocalAddressing=no``, no DHCP, no RA): the host offers VMs the VLAN
and stays off it. The bridge comes up without carrier so VMs can join before the switch port is up.
"""

from __future__ import annotations

from qx_console.hostconfig import NetworkConfig

HEADER = "# Written by qx-console from /var/lib/quantix/config/hostconfig.json; edits here are replaced.\n"
PREFIX = "10-quantix-"


def _ini(sections: list[tuple[str, list[tuple[str, str]]]]) -> str:
    out = [HEADER]
    for name, items in sections:
        out.append(f"\n[{name}]\n")
        out += [f"{k}={v}\n" for k, v in items]
    return "".join(out)


def _addressing(n: NetworkConfig) -> list[tuple[str, list[tuple[str, str]]]]:
    net: list[tuple[str, str]] = []
    v4, v6 = n.ipv4, n.ipv6
    dhcp = {("dhcp", "auto"): "yes", ("dhcp", "off"): "ipv4", ("dhcp", "static"): "ipv4"}.get((v4.mode, v6.mode))
    if dhcp:
        net.append(("DHCP", dhcp))
    elif v6.mode == "auto":
        net.append(("DHCP", "ipv6"))
    net.append(("LinkLocalAddressing", "ipv6" if v6.mode != "off" else "no"))
    net.append(("IPv6AcceptRA", "yes" if v6.mode == "auto" else "no"))
    if v4.mode == "static":
        net.append(("Address", f"{v4.address}/{v4.prefix}"))
        if v4.gateway:
            net.append(("Gateway", v4.gateway))
    if v6.mode == "static":
        net.append(("Address", f"{v6.address}/{v6.prefix}"))
        if v6.gateway:
            net.append(("Gateway", v6.gateway))
    net += [("DNS", d) for d in n.dns]
    if n.search_domain:
        net.append(("Domains", n.search_domain))
    return [("Network", net)]


def render(n: NetworkConfig) -> dict[str, str]:
    """The complete set of networkd files for ``n`` (empty for the factory default).

    Layers, bottom up: the adapters (one, several each with DHCP, or the members of a team's bond),
    then the VLAN device on the carrier (the adapter or the bond) if there is one, then the addresses."""
    if not n.configured:
        return {}
    files: dict[str, str] = {}
    adapters = [("Match", [("Name", " ".join(n.nics))])]
    if n.teamed:
        # systemd.netdev(5) [Bond]: the mode as the schema names it (active-backup | 802.3ad), link
        # monitoring every 100 ms (the default 0 would never notice a dead member), LACP at the fast rate.
        bond: list[tuple[str, str]] = [("Mode", n.team), ("MIIMonitorSec", "100ms")]
        if n.team == "802.3ad":
            bond.append(("LACPTransmitRate", "fast"))
        files[f"{PREFIX}mgmt-bond.netdev"] = _ini([("NetDev", [("Name", n.carrier), ("Kind", "bond")]),
                                                  ("Bond", bond)])
        # Members carry no address of their own; the bond has them. Said explicitly (no DHCP, link-local
        # or RA): systemd.network(5) of 254 names only Bridge=/KeepMaster= as turning link-local off,
        # although networkd and the kernel (IFF_SLAVE) already leave a bond member without one.
        # In active-backup the management adapter ``nic`` is the primary (PrimarySlave=, valid in that
        # mode only, so it gets a .network of its own and the others match without it).
        member = [("Bond", n.carrier), ("DHCP", "no"), ("LinkLocalAddressing", "no"), ("IPv6AcceptRA", "no")]
        others = n.nics
        if n.team == "active-backup":
            files[f"{PREFIX}mgmt-primary.network"] = _ini([("Match", [("Name", n.nic)]),
                                                          ("Network", [*member, ("PrimarySlave", "yes")])])
            others = n.extra_nics
        files[f"{PREFIX}mgmt-members.network"] = _ini([("Match", [("Name", " ".join(others))]),
                                                      ("Network", member)])
        carrier = [("Match", [("Name", n.carrier)])]
    else:
        carrier = adapters
    vm_vlans = [("VLAN", n.vm_vlan_device(v)) for v in n.vm_vlans]
    if n.vlan:
        vname = n.ifname
        files[f"{PREFIX}mgmt-vlan.netdev"] = _ini(
            [("NetDev", [("Name", vname), ("Kind", "vlan")]), ("VLAN", [("Id", str(n.vlan))])])
        files[f"{PREFIX}mgmt-nic.network"] = _ini(
            carrier + [("Network", [("VLAN", vname), *vm_vlans, ("LinkLocalAddressing", "no"), ("DHCP", "no")])])
        files[f"{PREFIX}mgmt.network"] = _ini([("Match", [("Name", vname)])] + _addressing(n))
    else:
        sections = _addressing(n)
        sections[0] = (sections[0][0], [*sections[0][1], *vm_vlans])
        files[f"{PREFIX}mgmt.network"] = _ini(carrier + sections)
    files.update(_vm_vlans(n))
    return files


def _vm_vlans(n: NetworkConfig) -> dict[str, str]:
    """Per VM VLAN: its VLAN device (a port of its bridge only) and its bridge (no host address)."""
    files: dict[str, str] = {}
    no_host = [("LinkLocalAddressing", "no"), ("DHCP", "no"), ("IPv6AcceptRA", "no")]
    for vid in n.vm_vlans:
        dev, br = n.vm_vlan_device(vid), n.vm_vlan_bridge(vid)
        files[f"{PREFIX}vm-vlan{vid}.netdev"] = _ini([("NetDev", [("Name", dev), ("Kind", "vlan")]),
                                                     ("VLAN", [("Id", str(vid))])])
        files[f"{PREFIX}vm-vlan{vid}.network"] = _ini([("Match", [("Name", dev)]),
                                                      ("Network", [("Bridge", br), *no_host])])
        files[f"{PREFIX}vm-br{vid}.netdev"] = _ini([("NetDev", [("Name", br), ("Kind", "bridge")])])
        files[f"{PREFIX}vm-br{vid}.network"] = _ini([("Match", [("Name", br)]),
                                                    ("Network", [*no_host, ("ConfigureWithoutCarrier", "yes")]),
                                                    ("Link", [("RequiredForOnline", "no")])])
    return files
