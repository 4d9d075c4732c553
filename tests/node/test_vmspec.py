"""The VM spec parser: valid specs pass, each rule fails naming its field; random input never crashes."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qx_node.errors import InvalidField
from qx_node.vmspec import parse_vm_spec

GOOD: dict[str, Any] = {"name": "web-1", "vcpus": 2, "memory_mib": 512, "firmware": "uefi",
                        "disks": [{"size_gib": 10}, {"volume": "data.qcow2", "bus": "sata"}],
                        "nics": [{"bridge": "br0", "mac": "52:54:00:AA:bb:01"}], "cdrom": "debian.iso",
                        "autostart": True, "restart_on_crash": True}


def test_good_spec_parses_with_defaults() -> None:
    s = parse_vm_spec(GOOD)
    assert (s.name, s.vcpus, s.memory_mib, s.firmware, s.boot) == ("web-1", 2, 512, "uefi", "cdrom")
    assert s.disks[0].size_gib == 10 and s.disks[0].volume is None and s.disks[1].volume == "data.qcow2"
    assert s.nics[0].mac == "52:54:00:aa:bb:01" and s.nics[0].model == "virtio"
    assert s.autostart and s.restart_on_crash and s.start
    minimal = parse_vm_spec({"name": "a", "memory_mib": 64})
    assert (minimal.vcpus, minimal.firmware, minimal.boot, minimal.disks) == (1, "bios", "disk", ())


@pytest.mark.parametrize(("change", "field"), [
    ({"name": "../etc"}, "name"),
    ({"name": "a<b>"}, "name"),
    ({"name": ""}, "name"),
    ({"name": "x" * 64}, "name"),
    ({"name": 5}, "name"),
    ({"vcpus": 0}, "vcpus"),
    ({"vcpus": True}, "vcpus"),
    ({"vcpus": 1.5}, "vcpus"),
    ({"memory_mib": 8}, "memory_mib"),
    ({"firmware": "coreboot"}, "firmware"),
    ({"disks": {}}, "disks"),
    ({"disks": [{"size_gib": 1, "volume": "a"}]}, "disks[0]"),
    ({"disks": [{}]}, "disks[0]"),
    ({"disks": [{"size_gib": 1}, {"size_gib": 0}]}, "disks[1].size_gib"),
    ({"disks": [{"volume": "../../etc/shadow"}]}, "disks[0].volume"),
    ({"disks": [{"volume": "/etc/shadow"}]}, "disks[0].volume"),
    ({"disks": [{"size_gib": 1, "bus": "ide"}]}, "disks[0].bus"),
    ({"disks": [{"size_gib": 1, "colour": "red"}]}, "disks[0].colour"),
    ({"nics": [{"model": "virtio"}]}, "nics[0].bridge"),
    ({"nics": [{"bridge": "br0 ; reboot"}]}, "nics[0].bridge"),
    ({"nics": [{"bridge": "br0", "mac": "01:00:5e:00:00:01"}]}, "nics[0].mac"),
    ({"cdrom": "x/../../y.iso"}, "cdrom"),
    ({"boot": "floppy"}, "boot"),
    ({"cdrom": None, "boot": "cdrom"}, "boot"),
    ({"initrd": "i.img", "kernel": None}, "kernel"),
    ({"cmdline": "console=ttyS0\n"}, "cmdline"),
    ({"autostart": "yes"}, "autostart"),
    ({"memroy_mib": 5}, "memroy_mib"),
])
def test_each_rule_names_its_field(change: dict[str, Any], field: str) -> None:
    body = {**GOOD, **change}
    body = {k: v for k, v in body.items() if v is not None}
    with pytest.raises(InvalidField) as ei:
        parse_vm_spec(body)
    assert ei.value.field == field
    assert ei.value.message.startswith(field)


def test_missing_required_fields() -> None:
    for missing in ("name", "memory_mib"):
        body = {k: v for k, v in GOOD.items() if k != missing}
        with pytest.raises(InvalidField) as ei:
            parse_vm_spec(body)
        assert ei.value.field == missing
    with pytest.raises(InvalidField) as ei:
        parse_vm_spec([GOOD])
    assert ei.value.field == "body"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12)
spec_like = st.fixed_dictionaries(
    {"name": st.text(max_size=70) | st.sampled_from(["ok", "a.b", "web-1"])},
    optional={"vcpus": json_values | st.integers(-2, 300), "memory_mib": json_values | st.integers(0, 10**8),
              "firmware": json_values | st.sampled_from(["bios", "uefi"]),
              "disks": st.lists(st.dictionaries(st.sampled_from(["size_gib", "volume", "bus", "x"]), json_values,
                                                max_size=3), max_size=3) | json_values,
              "nics": st.lists(st.dictionaries(st.sampled_from(["bridge", "mac", "model"]), json_values, max_size=3),
                               max_size=2),
              "cdrom": json_values, "boot": json_values, "kernel": json_values, "cmdline": json_values,
              "autostart": json_values})


@settings(max_examples=300, deadline=None)
@given(body=json_values | spec_like)
def test_random_bodies_parse_or_name_a_field(body: Any) -> None:
    try:
        parse_vm_spec(body)
    except InvalidField as e:
        assert e.field
        assert e.message.startswith(e.field)
