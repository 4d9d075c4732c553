"""The host-configuration schema: one test per validation rule, plus the dict round trip."""

from __future__ import annotations

from dataclasses import replace

import pytest

from qx_console import hostconfig as hc
from qx_console.hostconfig import HostConfig, IPv4Config, IPv6Config, NetworkConfig, ValidationError

GOOD_NET = NetworkConfig(nic="eth0", ipv4=IPv4Config("static", "192.0.2.10", 24, "192.0.2.1"),
                         ipv6=IPv6Config("off"), dns=("192.0.2.53",), search_domain="example.com")
GOOD = HostConfig(hostname="host1", network=GOOD_NET)


def errors_of(cfg: HostConfig) -> dict[str, str]:
    with pytest.raises(ValidationError) as ei:
        hc.validate(cfg)
    return {e.field: e.message for e in ei.value.errors}


def net(**kw) -> HostConfig:
    return replace(GOOD, network=replace(GOOD_NET, **kw))


def test_good_config_validates_and_round_trips() -> None:
    hc.validate(GOOD)
    assert hc.parse_host_config(hc.to_dict(GOOD)) == GOOD


def test_invalid_ipv4_address() -> None:
    errs = errors_of(net(ipv4=IPv4Config("static", "192.0.2.300", 24, "192.0.2.1")))
    assert "not an IPv4 address" in errs["network.ipv4.address"]


def test_invalid_prefix() -> None:
    errs = errors_of(net(ipv4=IPv4Config("static", "192.0.2.10", 33, "192.0.2.1")))
    assert "prefix" in errs["network.ipv4.prefix"]


def test_gateway_outside_subnet() -> None:
    errs = errors_of(net(ipv4=IPv4Config("static", "192.0.2.10", 24, "198.51.100.1")))
    assert "outside the subnet 192.0.2.0/24" in errs["network.ipv4.gateway"]


def test_network_address_is_not_a_host_address() -> None:
    errs = errors_of(net(ipv4=IPv4Config("static", "192.0.2.0", 24, "192.0.2.1")))
    assert "network or broadcast" in errs["network.ipv4.address"]


def test_invalid_ipv6_address() -> None:
    errs = errors_of(net(ipv6=IPv6Config("static", "2001:db8::zz", 64, "")))
    assert "not an IPv6 address" in errs["network.ipv6.address"]


def test_ipv6_gateway_outside_subnet_unless_link_local() -> None:
    errs = errors_of(net(ipv6=IPv6Config("static", "2001:db8::10", 64, "2001:db9::1")))
    assert "outside the subnet" in errs["network.ipv6.gateway"]
    hc.validate(net(ipv6=IPv6Config("static", "2001:db8::10", 64, "fe80::1")))


@pytest.mark.parametrize("vlan", [0, 4095, -1])
def test_vlan_out_of_range(vlan: int) -> None:
    errs = errors_of(net(vlan=vlan))
    assert "VLAN" in errs["network.vlan"]


def test_hostname_with_illegal_characters() -> None:
    errs = errors_of(replace(GOOD, hostname="my_host!"))
    assert "illegal character" in errs["hostname"] and "'_'" in errs["hostname"]


def test_hostname_label_rules() -> None:
    assert "label" in errors_of(replace(GOOD, hostname="-host"))["hostname"]
    assert "empty" in errors_of(replace(GOOD, hostname=""))["hostname"]


def test_empty_dns_with_static_address() -> None:
    errs = errors_of(net(dns=()))
    assert "DNS" in errs["network.dns"]


def test_dns_entry_not_an_address() -> None:
    assert "network.dns" in errors_of(net(dns=("dns.example.com",)))


def test_search_domain() -> None:
    assert "network.search_domain" in errors_of(net(search_domain="bad domain"))


def test_all_errors_are_reported_at_once() -> None:
    errs = errors_of(replace(GOOD, hostname="a_b", network=replace(GOOD_NET, vlan=0, dns=())))
    assert {"hostname", "network.vlan", "network.dns"} <= set(errs)


def test_unknown_key_in_answer_file_is_refused() -> None:
    with pytest.raises(ValidationError) as ei:
        hc.parse_host_config({"hostname": "h", "network": {"nic": "eth0", "vlna": 5}})
    assert ei.value.errors[0].field == "network.vlna"
    assert "known here" in (ei.value.errors[0].hint or "")


def test_wrong_type_in_answer_file() -> None:
    with pytest.raises(ValidationError) as ei:
        hc.parse_host_config({"network": {"nic": "eth0", "vlan": "10"}})
    assert ei.value.errors[0].field == "network.vlan"


def test_ssh_timeout_and_channel() -> None:
    assert "ssh.timeout_min" in errors_of(replace(GOOD, ssh=hc.SshConfig(True, 2000)))
    assert "update_channel" in errors_of(replace(GOOD, update_channel="Stable!"))


def test_factory_default_network_needs_nothing() -> None:
    hc.validate(HostConfig())


def test_parse_dns_list() -> None:
    assert hc.parse_dns_list(" 1.1.1.1, 9.9.9.9 ;2001:db8::1 ") == ("1.1.1.1", "9.9.9.9", "2001:db8::1")
