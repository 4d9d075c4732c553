"""Persistent configuration: networkd rendering, atomic writes, provenance, previous/restore, reset."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from qx_console import networkd, shadow
from qx_console.hostconfig import HostConfig, IPv4Config, IPv6Config, NetworkConfig, ValidationError
from qx_console.store import ConfigStore, snapshot_dir

NET = NetworkConfig(nic="eth0", ipv4=IPv4Config("static", "192.0.2.10", 24, "192.0.2.1"),
                    ipv6=IPv6Config("off"), dns=("192.0.2.53", "192.0.2.54"), search_domain="example.com")
CFG = HostConfig(hostname="host1", network=NET)


def test_render_static_without_vlan() -> None:
    files = networkd.render(NET)
    assert list(files) == ["10-quantix-mgmt.network"]
    text = files["10-quantix-mgmt.network"]
    for line in ("Name=eth0", "Address=192.0.2.10/24", "Gateway=192.0.2.1", "DNS=192.0.2.53", "DNS=192.0.2.54",
                 "Domains=example.com", "LinkLocalAddressing=no"):
        assert line + "\n" in text
    assert "DHCP=" not in text


def test_render_vlan_dhcp_ipv6_auto() -> None:
    files = networkd.render(replace(NET, vlan=42, ipv4=IPv4Config("dhcp"), ipv6=IPv6Config("auto"), dns=()))
    assert set(files) == {"10-quantix-mgmt-vlan.netdev", "10-quantix-mgmt-nic.network", "10-quantix-mgmt.network"}
    assert "Kind=vlan\n" in files["10-quantix-mgmt-vlan.netdev"] and "Id=42\n" in files["10-quantix-mgmt-vlan.netdev"]
    assert "VLAN=eth0.42\n" in files["10-quantix-mgmt-nic.network"]
    assert "Name=eth0.42\n" in files["10-quantix-mgmt.network"] and "DHCP=yes\n" in files["10-quantix-mgmt.network"]


def test_render_dhcp_on_several_adapters() -> None:
    files = networkd.render(NetworkConfig(nic="eno1", extra_nics=("eno2", "eno3")))
    assert list(files) == ["10-quantix-mgmt.network"]
    assert "Name=eno1 eno2 eno3\n" in files["10-quantix-mgmt.network"]
    assert "DHCP=yes\n" in files["10-quantix-mgmt.network"]


def test_render_team_with_vlan() -> None:
    files = networkd.render(replace(NET, nic="eno1", extra_nics=("eno2",), team="802.3ad", vlan=7))
    assert set(files) == {"10-quantix-mgmt-bond.netdev", "10-quantix-mgmt-members.network",
                          "10-quantix-mgmt-vlan.netdev", "10-quantix-mgmt-nic.network", "10-quantix-mgmt.network"}
    bond = files["10-quantix-mgmt-bond.netdev"]
    assert "Name=qxbond0\nKind=bond\n" in bond and "Mode=802.3ad\n" in bond
    members = files["10-quantix-mgmt-members.network"]
    assert "Name=eno1 eno2\n" in members and "Bond=qxbond0\n" in members
    assert "Name=qxbond0\n" in files["10-quantix-mgmt-nic.network"]
    assert "VLAN=qxbond0.7\n" in files["10-quantix-mgmt-nic.network"]
    assert "Name=qxbond0.7\n" in files["10-quantix-mgmt.network"]
    assert "Address=192.0.2.10/24\n" in files["10-quantix-mgmt.network"]


def test_render_vm_vlans_on_the_adapter_and_beside_a_management_vlan() -> None:
    """VM VLANs: each a VLAN device listed by the carrier's .network (networkd attaches VLANs only there)
    and the one port of its bridge; neither the VLAN nor the bridge has a host address."""
    body = lambda text: text.split("\n", 1)[1]  # noqa: E731 - without the 'written by' header
    files = networkd.render(replace(NET, vm_vlans=(20, 4094)))
    assert set(files) == {"10-quantix-mgmt.network"} | {f"10-quantix-vm-{k}{v}.{ext}" for v in (20, 4094)
                                                          for k, ext in (("vlan", "netdev"), ("vlan", "network"),
                                                                         ("br", "netdev"), ("br", "network"))}
    mgmt = files["10-quantix-mgmt.network"]
    assert "VLAN=qxvlan20\nVLAN=qxvlan4094\n" in mgmt and "Address=192.0.2.10/24\n" in mgmt
    assert body(files["10-quantix-vm-vlan20.netdev"]) == "\n[NetDev]\nName=qxvlan20\nKind=vlan\n\n[VLAN]\nId=20\n"
    no_host = "LinkLocalAddressing=no\nDHCP=no\nIPv6AcceptRA=no\n"
    assert body(files["10-quantix-vm-vlan20.network"]) == (
        f"\n[Match]\nName=qxvlan20\n\n[Network]\nBridge=qxbr20\n{no_host}")
    assert body(files["10-quantix-vm-br20.netdev"]) == "\n[NetDev]\nName=qxbr20\nKind=bridge\n"
    assert body(files["10-quantix-vm-br20.network"]) == (
        f"\n[Match]\nName=qxbr20\n\n[Network]\n{no_host}ConfigureWithoutCarrier=yes\n\n[Link]\n"
        "RequiredForOnline=no\n")
    assert all(len(NetworkConfig.vm_vlan_device(v)) <= 15 for v in (1, 4094))  # Linux's IFNAMSIZ - 1
    # With a management VLAN (on a team): the VM VLANs sit on the carrier beside it, not on the management VLAN.
    team = networkd.render(replace(NET, nic="eno1", extra_nics=("eno2",), team="active-backup", vlan=7,
                                   vm_vlans=(30,)))
    assert "VLAN=qxbond0.7\nVLAN=qxvlan30\n" in team["10-quantix-mgmt-nic.network"]
    assert "qxvlan30" not in team["10-quantix-mgmt.network"]
    # Nothing of it without VM VLANs: the rendering of every existing configuration is unchanged.
    assert networkd.render(NET) == networkd.render(replace(NET, vm_vlans=()))


@pytest.mark.parametrize(("network", "words"), [
    (NetworkConfig(vm_vlans=(20,)), "management adapter"),
    (replace(NET, vm_vlans=(0,)), "usable VLAN"), (replace(NET, vm_vlans=(4095,)), "usable VLAN"),
    (replace(NET, vm_vlans=(20, 20)), "twice"), (replace(NET, vlan=20, vm_vlans=(20,)), "management VLAN"),
    (replace(NET, vm_vlans=tuple(range(1, 66))), "at most 64"),
    (NetworkConfig(nic="eno1", extra_nics=("eno2",), vm_vlans=(20,)), "without a team"),
])
def test_vm_vlans_are_validated(network: NetworkConfig, words: str) -> None:
    with pytest.raises(ValidationError) as e:
        ConfigStore(Path("/nonexistent")).save(replace(CFG, network=network), "test", ())
    assert any(err.field == "network.vm_vlans" and words in err.message for err in e.value.errors), e.value.errors


def test_vm_vlans_round_trip_and_reject_a_wrong_type() -> None:
    from qx_console.hostconfig import parse_host_config, to_dict

    cfg = replace(CFG, network=replace(NET, vm_vlans=(20, 30)))
    assert parse_host_config(to_dict(cfg)) == cfg
    for bad in (["20"], [True], "20"):
        d = to_dict(cfg)
        d["network"]["vm_vlans"] = bad
        with pytest.raises(ValidationError) as e:
            parse_host_config(d)
        assert e.value.errors[0].field == "network.vm_vlans"


def test_factory_default_renders_no_files() -> None:
    assert networkd.render(NetworkConfig()) == {}


def test_save_writes_everything_and_provenance(tmp_path: Path) -> None:
    st = ConfigStore(tmp_path)
    st.save(CFG, "answer-file", ("hostname", "network.nic"))
    assert st.load() == CFG
    assert (st.dir / "hostname").read_text() == "host1\n"
    assert set(snapshot_dir(st.network_dir)) == {"10-quantix-mgmt.network"}
    assert st.provenance() == {"hostname": "answer-file", "network.nic": "answer-file"}
    st.save(replace(CFG, hostname="host2"), "console", ("hostname",))
    assert st.provenance()["hostname"] == "console"
    assert not list(st.dir.glob(".*")), "no temporary files left behind"


def test_invalid_config_writes_nothing(tmp_path: Path) -> None:
    st = ConfigStore(tmp_path)
    with pytest.raises(ValidationError):
        st.save(replace(CFG, network=replace(NET, vlan=4095)), "console", ())
    assert not st.dir.exists() or not any(st.dir.rglob("*.*"))


def test_keep_and_restore_previous(tmp_path: Path) -> None:
    st = ConfigStore(tmp_path)
    st.save(CFG, "console", ("network.nic",))
    before = (snapshot_dir(st.network_dir), st.config_file.read_text(), st.provenance())
    st.keep_previous()
    st.save(replace(CFG, network=replace(NET, vlan=7)), "console", ("network.vlan",))
    assert "10-quantix-mgmt-vlan.netdev" in snapshot_dir(st.network_dir)
    st.restore_previous()
    assert (snapshot_dir(st.network_dir), st.config_file.read_text(), st.provenance()) == before


def test_stale_files_of_other_owners_are_kept(tmp_path: Path) -> None:
    st = ConfigStore(tmp_path)
    st.network_dir.mkdir(parents=True)
    (st.network_dir / "50-operator.network").write_text("[Match]\n")
    st.save(CFG, "console", ())
    st.reset()
    assert snapshot_dir(st.network_dir) == {"50-operator.network": "[Match]\n"}
    assert st.load() == HostConfig()


def test_password_verify_and_change(hostroot: Path) -> None:
    sh = hostroot / "etc/shadow"
    assert shadow.verify(sh, "root", "quantix-pw")
    assert not shadow.verify(sh, "root", "wrong")
    assert not shadow.verify(sh, "daemon", "")  # locked account
    shadow.set_password(sh, "root", "new-password-1")
    assert shadow.verify(sh, "root", "new-password-1") and not shadow.verify(sh, "root", "quantix-pw")
    assert "daemon:*:" in sh.read_text()
    assert (sh.stat().st_mode & 0o777) == 0o640


def test_sha512_hashes_verify_too(tmp_path: Path) -> None:
    sh = tmp_path / "shadow"
    # made with: openssl passwd -6 -salt abcdefgh secret
    sh.write_text("root:$6$abcdefgh$ltjgWl6579NluT/Vi1nwEvcil.G5Nbc4NiXZaNGStk8PSwGfQv72N2CKPPrVACtLtip/cZ/1GM/"
                  "O6IND4WQhG.:19000:0:99999:7:::\n")
    assert shadow.verify(sh, "root", "secret")
    assert not shadow.verify(sh, "root", "Secret")
