"""qx_console.vmnet, the program qx-node runs for a VLAN network's host side: the host configuration's
``network.vm_vlans`` changed and its networkd files rendered by the console's one renderer. Run with
``--files-only`` on a host root under tmp (activation would ask the build machine's own networkd to
reload); the API's side is tests/node/test_networks.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qx_console import networkd, vmnet
from qx_console.hostconfig import HostConfig, IPv4Config, NetworkConfig
from qx_console.store import ConfigStore, snapshot_dir

NET = NetworkConfig(nic="eno1", ipv4=IPv4Config("dhcp"))


def _run(root: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict | None, str]:
    rc = vmnet.main(["--root", str(root), "--files-only", *args])
    out, err = capsys.readouterr()
    return rc, (json.loads(out.splitlines()[-1]) if out.strip() else None), err


def test_add_twice_remove_and_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = ConfigStore(tmp_path)
    rc, out, err = _run(tmp_path, capsys, "add", "20")
    assert rc == 2 and out is None and "network.vm_vlans" in err and "management adapter" in err, err
    assert not store.config_file.exists()  # nothing written for a refused change

    store.save(HostConfig(network=NET), "console", ("network.nic",))
    rc, out, _ = _run(tmp_path, capsys, "add", "20")
    assert rc == 0 and out == {"vlan": 20, "bridge": "qxbr20", "vm_vlans": [20], "changed": True, "kept": True,
                               "reason": "written; networkd applies it at its next start"}
    assert store.load().network.vm_vlans == (20,)
    assert snapshot_dir(store.network_dir) == networkd.render(store.load().network)
    assert store.provenance()["network.vm_vlans"] == "console" and store.provenance()["network.nic"] == "console"
    rc, out, _ = _run(tmp_path, capsys, "add", "20")
    assert rc == 0 and out is not None and out["changed"] is False and out["reason"] == "nothing to change"
    rc, out, _ = _run(tmp_path, capsys, "add", "5")
    assert rc == 0 and out is not None and out["vm_vlans"] == [5, 20]  # kept sorted
    for bad in ("0", "4095"):
        rc, out, err = _run(tmp_path, capsys, "add", bad)
        assert rc == 2 and "vlan" in err, err
    rc, out, _ = _run(tmp_path, capsys, "remove", "20")
    assert rc == 0 and out is not None and out["vm_vlans"] == [5]
    rc, out, _ = _run(tmp_path, capsys, "remove", "5")
    assert rc == 0 and store.load().network.vm_vlans == ()
    assert snapshot_dir(store.network_dir) == networkd.render(NET)
    rc, out, _ = _run(tmp_path, capsys, "remove", "5")
    assert rc == 0 and out is not None and out["changed"] is False


def test_an_unreadable_configuration_is_never_replaced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = ConfigStore(tmp_path)
    store.save(HostConfig(network=NET), "console", ())
    for text in ('{"network": {"nic": "eno1", "vm_vlans": [', '{"network": {"nic": "eno1", "vm_vlans": [2], "x": 1}}'):
        store.config_file.write_text(text)
        for action in ("add", "remove"):
            rc, out, err = _run(tmp_path, capsys, action, "2")
            assert rc == 4 and out is None and "cannot be read" in err, err
            assert store.config_file.read_text() == text
