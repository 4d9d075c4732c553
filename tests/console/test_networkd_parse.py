"""The rendered networkd files, read by the real systemd-networkd of this machine (no warning allowed).

``systemd-analyze verify`` knows units, not networkd files, so the check is networkd itself: it runs in a
private mount and network namespace (``unshare -m -n``) with a tmpfs on ``/run/systemd`` holding only our
files (``/etc/systemd/network`` hidden by a tmpfs too), at debug level, until it has loaded its
configuration and enumerated its links. Every complaint about a file names its path (``Unknown key``,
``Failed to parse``, a section it ignores), so a line naming one of ours fails the test; a deliberately
wrong key shows the check can fail. The bond itself is not brought up: this kernel has no bonding module
(``qxbond0: netdev could not be created: Operation not supported``); that is proved only in the QEMU guest.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from qx_console import networkd
from qx_console.hostconfig import IPv4Config, IPv6Config, NetworkConfig

pytestmark = pytest.mark.root
NETWORKD = Path("/lib/systemd/systemd-networkd")
HOLD_LIMIT_S = 60.0  # networkd that never reports its enumeration: a failure, not a wait forever

# Inside the namespaces: only our files in /run/systemd/network; two veth links to match.
SCRIPT = textwrap.dedent("""\
    set -e
    mount -t tmpfs tmpfs /run/systemd
    mount -t tmpfs tmpfs /etc/systemd/network
    mkdir -p /run/systemd/network /run/systemd/netif
    cp "$1"/* /run/systemd/network/
    ip link add eno1 type veth peer name eno2
    exec env SYSTEMD_LOG_LEVEL=debug SYSTEMD_LOG_TARGET=console "$2"
""")

CONFIGS = {
    "active-backup, VLAN": NetworkConfig(nic="eno1", extra_nics=("eno2",), team="active-backup", vlan=7,
                                         ipv4=IPv4Config("static", "192.0.2.10", 24, "192.0.2.1"),
                                         dns=("192.0.2.53",), search_domain="example.com"),
    "802.3ad, IPv6 static": NetworkConfig(nic="eno1", extra_nics=("eno2",), team="802.3ad",
                                          ipv4=IPv4Config("dhcp"), ipv6=IPv6Config("static", "2001:db8::10", 64,
                                                                                    "fe80::1")),
    "two adapters, DHCP each": NetworkConfig(nic="eno1", extra_nics=("eno2",)),
    "VM VLANs, static": NetworkConfig(nic="eno1", ipv4=IPv4Config("static", "192.0.2.10", 24, "192.0.2.1"),
                                      dns=("192.0.2.53",), vm_vlans=(20, 4094)),
    "VM VLANs beside a management VLAN": NetworkConfig(nic="eno1", vlan=7, vm_vlans=(20,)),
}


def networkd_log(files: dict[str, str], tmp: Path) -> list[str]:
    """networkd's log lines for a configuration of ``files``, up to its first enumeration of the links."""
    if os.geteuid() != 0:
        pytest.fail("needs root for a mount and network namespace (run as root, or deselect with -m 'not root')")
    if not NETWORKD.exists() or shutil.which("unshare") is None:
        pytest.fail(f"{NETWORKD} and unshare are needed (apt-get install systemd util-linux)")
    conf = tmp / "conf"
    conf.mkdir()
    for name, text in files.items():
        (conf / name).write_text(text)
    proc = subprocess.Popen(["unshare", "-m", "-n", "--propagation", "private", "sh", "-c", SCRIPT, "sh",
                             str(conf), str(NETWORKD)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    deadline = time.monotonic() + HOLD_LIMIT_S
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if "Enumeration completed" in line or time.monotonic() > deadline:
                break
    finally:
        proc.kill()
        proc.wait()
    assert any("Enumeration completed" in ln for ln in lines), "\n".join(lines[-30:])
    return lines


def complaints(lines: list[str]) -> list[str]:
    return [ln for ln in lines if "/run/systemd/network/" in ln and "Skipping" not in ln]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_networkd_reads_every_rendered_file_without_a_warning(name: str, tmp_path: Path) -> None:
    files = networkd.render(CONFIGS[name])
    lines = networkd_log(files, tmp_path)
    assert complaints(lines) == []
    if CONFIGS[name].teamed:
        assert 'qxbond0: loaded "bond"' in lines


def test_vm_vlan_bridges_and_vlans_are_loaded(tmp_path: Path) -> None:
    """networkd makes each VM VLAN's bridge here at once; the VLAN device waits for its carrier (and needs
    8021q, which this kernel lacks: its bring-up is not proved here)."""
    lines = networkd_log(networkd.render(CONFIGS["VM VLANs, static"]), tmp_path)
    for dev, kind in (("qxbr20", "bridge"), ("qxbr4094", "bridge"), ("qxvlan20", "vlan"), ("qxvlan4094", "vlan")):
        assert f'{dev}: loaded "{kind}"' in lines, (dev, [ln for ln in lines if dev in ln])
    assert any("qxbr20: netdev ready" in ln for ln in lines), [ln for ln in lines if "qxbr20" in ln]


def test_a_wrong_key_is_reported(tmp_path: Path) -> None:
    files = networkd.render(CONFIGS["active-backup, VLAN"])
    # PrimarySlave belongs to a member's .network, not to the bond's [Bond] section.
    files["10-quantix-mgmt-bond.netdev"] += "PrimarySlave=yes\n"
    bad = complaints(networkd_log(files, tmp_path))
    assert len(bad) == 1 and "Unknown key 'PrimarySlave' in section [Bond]" in bad[0], bad


def test_bond_files_as_networkd_needs_them() -> None:
    """systemd.netdev(5) [Bond] and systemd.network(5) [Network]: mode, link monitor, LACP rate, the
    primary member (active-backup only) and members without any address of their own."""
    ab = networkd.render(CONFIGS["active-backup, VLAN"])
    body = lambda text: text.split("\n", 1)[1]  # noqa: E731 - without the 'written by' header
    assert body(ab["10-quantix-mgmt-bond.netdev"]) == (
        "\n[NetDev]\nName=qxbond0\nKind=bond\n\n[Bond]\nMode=active-backup\nMIIMonitorSec=100ms\n")
    member = "Bond=qxbond0\nDHCP=no\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n"
    assert body(ab["10-quantix-mgmt-primary.network"]) == (
        f"\n[Match]\nName=eno1\n\n[Network]\n{member}PrimarySlave=yes\n")
    assert body(ab["10-quantix-mgmt-members.network"]) == f"\n[Match]\nName=eno2\n\n[Network]\n{member}"
    # The addresses sit on the VLAN of the bond, never on a member.
    assert "Name=qxbond0\n" in ab["10-quantix-mgmt-nic.network"]
    assert "Address=192.0.2.10/24\n" in ab["10-quantix-mgmt.network"]
    assert not any("Address=" in t for k, t in ab.items() if "member" in k or "primary" in k)

    lacp = networkd.render(CONFIGS["802.3ad, IPv6 static"])
    assert "primary" not in " ".join(lacp)  # PrimarySlave= is not valid in 802.3ad
    assert body(lacp["10-quantix-mgmt-bond.netdev"]).endswith(
        "[Bond]\nMode=802.3ad\nMIIMonitorSec=100ms\nLACPTransmitRate=fast\n")
    assert body(lacp["10-quantix-mgmt-members.network"]) == f"\n[Match]\nName=eno1 eno2\n\n[Network]\n{member}"
