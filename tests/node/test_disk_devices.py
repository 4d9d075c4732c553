"""A VM's disks by device name (``disk_devices`` of ``GET /v1/vms/{name}``): what the web client's "Remove"
of a disk sends to ``DELETE /v1/vms/{name}/disks/{dev}``, and a removal the running VM gets only at its next
start shown as such (libvirt's test driver cannot detach live, as some guests cannot)."""

from __future__ import annotations

import httpx
import libvirt


def test_disk_devices_and_a_removal_pending_the_next_start(client: httpx.Client, lv: libvirt.virConnect) -> None:
    r = client.post("/v1/vms/test/disks", json={"size_gib": 1})  # the driver's own VM, running
    assert r.status_code == 200, r.text
    dev = r.json()["device"]
    vm = client.get("/v1/vms/test").json()
    mine = [d for d in vm["disk_devices"] if d["dev"] == dev]
    assert len(mine) == 1 and mine[0]["path"] in vm["disks"] and mine[0]["removed_at_next_start"] is False
    assert all(d["path"] in vm["disks"] for d in vm["disk_devices"])
    volume = mine[0]["path"].rsplit("/", 1)[1]

    r = client.delete(f"/v1/vms/test/disks/{dev}", params={"remove_volume": "true"})
    assert r.status_code == 409 and r.json()["field"] == "remove_volume" and "shut" in r.json()["hint"]
    r = client.delete(f"/v1/vms/test/disks/{dev}")
    assert r.status_code == 200 and r.json()["applied"] == {"disks": "next_start"}
    gone = [d for d in r.json()["disk_devices"] if d["dev"] == dev]
    assert gone and gone[0]["removed_at_next_start"] is True
    assert volume not in lv.lookupByName("test").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert client.get(f"/v1/storage/volumes/{volume}").status_code == 200  # kept
