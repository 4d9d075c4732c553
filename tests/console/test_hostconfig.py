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
    assert "network.search_domain" in errors_of(net(search_domain="bad_domain"))
    # several, separated by spaces (networkd's Domains=): each is checked, and at most six
    hc.validate(net(search_domain="a.example b.example"))
    assert "network.search_domain" in errors_of(net(search_domain="a.example -b.example"))
    assert "6" in errors_of(net(search_domain=" ".join(f"d{i}.example" for i in range(7))))["network.search_domain"]
    assert hc.parse_domain_list("a.example, b.example;c.example") == "a.example b.example c.example"


DHCP_NET = NetworkConfig(nic="eno1", extra_nics=("eno2",))


def test_several_adapters_take_dhcp_each_or_form_a_team() -> None:
    hc.validate(HostConfig(network=DHCP_NET))
    team = replace(GOOD_NET, nic="eno1", extra_nics=("eno2",), team="active-backup", vlan=12)
    hc.validate(replace(GOOD, network=team))
    assert team.ifname == "qxbond0.12" and team.nics == ("eno1", "eno2")
    # without a team there is no one device for a static address or a VLAN
    errs = errors_of(net(extra_nics=("eth1",)))
    assert "without a team" in errs["network.extra_nics"]
    errs = errors_of(HostConfig(network=replace(DHCP_NET, vlan=5)))
    assert "VLAN" in errs["network.extra_nics"]
    assert "two adapters" in errors_of(net(team="802.3ad"))["network.team"]
    assert "team mode" in errors_of(HostConfig(network=replace(DHCP_NET, team="rr")))["network.team"]
    assert "twice" in errors_of(HostConfig(network=replace(DHCP_NET, extra_nics=("eno1",))))["network.extra_nics"]
    assert "interface name" in errors_of(HostConfig(network=replace(DHCP_NET, extra_nics=("a b",))))[
        "network.extra_nics"]
    assert "at most" in errors_of(HostConfig(network=replace(DHCP_NET, extra_nics=tuple(
        f"eno{i}" for i in range(2, 10)))))["network.extra_nics"]


def test_adapters_and_team_round_trip_through_a_dict() -> None:
    cfg = replace(GOOD, network=replace(GOOD_NET, extra_nics=("eth1",), team="802.3ad"))
    d = hc.to_dict(cfg)
    assert d["network"]["extra_nics"] == ["eth1"] and d["network"]["team"] == "802.3ad"
    assert hc.parse_host_config(d) == cfg
    d["network"]["extra_nics"] = [3]
    with pytest.raises(ValidationError) as ei:
        hc.parse_host_config(d)
    assert ei.value.errors[0].field == "network.extra_nics"


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


# -- the rules added for issue 11 ------------------------------------------------------------------


@pytest.mark.parametrize("addr,why", [
    ("127.0.0.5", "loopback"), ("169.254.10.1", "link-local"), ("240.0.0.1", "reserved"),
    ("224.0.0.1", "multicast"), ("0.0.0.0", "unspecified"), ("255.255.255.255", "broadcast"),
])
def test_unusable_ipv4_as_address_gateway_and_dns(addr: str, why: str) -> None:
    errs = errors_of(net(ipv4=IPv4Config("static", addr, 24, "")))
    assert why in errs["network.ipv4.address"]
    errs = errors_of(net(ipv4=IPv4Config("static", "192.0.2.10", 24, addr)))
    assert why in errs["network.ipv4.gateway"]
    errs = errors_of(net(dns=(addr,)))
    assert why in errs["network.dns"]


@pytest.mark.parametrize("addr,why", [("::1", "loopback"), ("fe80::10", "link-local"), ("ff02::1", "multicast"),
                                      ("::ffff:192.0.2.1", "reserved")])
def test_unusable_ipv6_as_address_and_dns(addr: str, why: str) -> None:
    errs = errors_of(net(ipv6=IPv6Config("static", addr, 64, "")))
    assert why in errs["network.ipv6.address"]
    assert why in errors_of(net(dns=(addr,)))["network.dns"]


def test_ipv6_link_local_gateway_stays_allowed_but_not_loopback() -> None:
    hc.validate(net(ipv6=IPv6Config("static", "2001:db8::10", 64, "fe80::1")))
    assert "loopback" in errors_of(net(ipv6=IPv6Config("static", "2001:db8::10", 64, "::1")))["network.ipv6.gateway"]


def test_hostname_length_is_the_kernels_64() -> None:
    hc.validate(replace(GOOD, hostname="a" * 60 + ".com"))  # 64: the limit
    errs = errors_of(replace(GOOD, hostname="a" * 61 + ".com"))
    assert errs["hostname"] == "is 65 characters long"
    # a search domain may be longer (a DNS name, not the kernel's host name)
    hc.validate(net(search_domain="a" * 60 + "." + "b" * 60 + ".example.com"))


@pytest.mark.parametrize("name", ["1234", "10.0.0.1", "host.123"])
def test_all_numeric_hostname_is_refused(name: str) -> None:
    assert "all digits" in errors_of(replace(GOOD, hostname=name))["hostname"]


def test_vlan_interface_name_fits_the_kernels_15_characters() -> None:
    hc.validate(net(nic="enp0s31f6", vlan=4000))  # enp0s31f6.4000: 14
    hc.validate(net(nic="enx012345678", vlan=42))  # enx012345678.42: 15, the limit
    long = errors_of(net(nic="enx0123456789", vlan=42))  # enx0123456789.42: 16
    assert "16 characters; Linux allows 15" in long["network.vlan"]


def test_field_error_text_is_ascii() -> None:
    e = hc.FieldError("network.vlan", "is bad", "use 1-4094")
    assert str(e) == "network.vlan: is bad - use 1-4094" and str(e).isascii()


@pytest.mark.parametrize("text", ["\u0663", "\u00b2", "\uff11", "+5", "-1", "2 4", "0x10"])
def test_parse_int_takes_ascii_digits_only(text: str) -> None:
    value, err = hc.parse_int(text, "network.ipv4.prefix", "enter 1-32")
    assert value is None and err is not None and err.field == "network.ipv4.prefix"


def test_parse_int_empty_is_an_error_only_when_required() -> None:
    assert hc.parse_int(" 24 ", "f", "h") == (24, None)
    value, err = hc.parse_int("", "network.ipv4.prefix", "enter 1-32")
    assert value is None and err is not None and err.message == "is empty"
    assert hc.parse_int("", "network.vlan", "h", required=False) == (None, None)


def test_ssh_timeout_rule() -> None:
    assert hc.check_ssh_timeout(0) is None and hc.check_ssh_timeout(1440) is None
    assert hc.check_ssh_timeout(1441) is not None and hc.check_ssh_timeout(True) is not None


@pytest.mark.parametrize("value", ["-f", "--help", "-c1", "a b", "host;reboot", ""])
def test_lookup_name_and_ping_target_are_never_options(value: str) -> None:
    assert hc.check_lookup_name(value) is not None
    assert hc.check_ping_target(value) is not None


def test_lookup_name_and_ping_target_accept_names_and_addresses() -> None:
    assert hc.check_lookup_name("quantix-os.org") is None
    for ok in ("192.0.2.1", "2001:db8::1", "gw.example.com"):
        assert hc.check_ping_target(ok) is None, ok
    assert "not an IP address" in hc.check_ping_target("192.0.2.300").message


@pytest.mark.parametrize("pattern,ok", [("", True), ("ssh|sshd", True), ("error (code 5)", True),
                                        ("([unclosed", False), ("*bad", False), ("a\x1b[2J", False)])
def test_log_filter_rule(pattern: str, ok: bool) -> None:
    assert (hc.check_log_filter(pattern) is None) == ok


def test_answer_file_gets_the_same_address_rules() -> None:
    with pytest.raises(ValidationError) as ei:
        hc.parse_host_config({"hostname": "h1", "network": {"nic": "eth0", "ipv4": {
            "mode": "static", "address": "127.0.0.1", "prefix": 8}, "dns": ["169.254.0.1"]}})
    fields = {e.field for e in ei.value.errors}
    assert {"network.ipv4.address", "network.dns"} <= fields


def test_answer_file_static_address_without_prefix_is_refused() -> None:
    """Not a silent /24 or /64: the answer file must say the prefix."""
    with pytest.raises(ValidationError) as ei:
        hc.parse_host_config({"hostname": "h1", "network": {
            "nic": "eth0", "ipv4": {"mode": "static", "address": "192.0.2.10", "gateway": "192.0.2.1"},
            "ipv6": {"mode": "static", "address": "2001:db8::10"}, "dns": ["192.0.2.53"]}})
    assert {e.field for e in ei.value.errors} == {"network.ipv4.prefix", "network.ipv6.prefix"}
    assert "add prefix = 24" in ei.value.errors[0].hint
    # DHCP needs none
    hc.parse_host_config({"hostname": "h1", "network": {"nic": "eth0", "ipv4": {"mode": "dhcp"}}})
