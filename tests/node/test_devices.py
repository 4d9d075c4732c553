"""VM devices after creation on the real server (uvicorn, TLS) against libvirt's test:///default: add
and remove disks and NICs, insert and eject ISOs — in the persistent definition, and live on a
running VM where the driver allows, with ``applied`` saying which."""

from __future__ import annotations

from typing import Any

import httpx
import libvirt



def _cfg(lv: libvirt.virConnect, name: str) -> str:
    return lv.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)  # type: ignore[no-any-return]


def _vm(client: httpx.Client, name: str, **spec: Any) -> dict[str, Any]:
    r = client.post("/v1/vms?wait=true", json={"name": name, "memory_mib": 64, **spec})
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def test_disks_added_and_removed_on_a_shut_off_vm(client: httpx.Client, lv: libvirt.virConnect) -> None:
    _vm(client, "d", start=False, disks=[{"size_gib": 1}])
    r = client.post("/v1/vms/d/disks", json={"size_gib": 2})
    assert r.status_code == 200, r.text
    vm = r.json()
    assert vm["applied"] == {"disks": "now"} and vm["device"] == "vdb"
    assert len(vm["disks"]) == 2 and vm["disks"][1].endswith("/d-disk1.qcow2")
    assert client.get("/v1/storage/volumes/d-disk1.qcow2").json()["capacity"] == 2 * 1024**3
    assert "d-disk1.qcow2" in _cfg(lv, "d") and "dev='vdb'" in _cfg(lv, "d")
    # An existing volume, on SATA; the same volume twice, or another VM's disk, is refused.
    assert client.post("/v1/storage/volumes", json={"name": "data.img", "size_gib": 1, "format": "raw"}).status_code == 201
    r = client.post("/v1/vms/d/disks", json={"volume": "data.img", "bus": "sata"})
    assert r.status_code == 200 and r.json()["device"] == "sda"
    r = client.post("/v1/vms/d/disks", json={"volume": "data.img"})
    assert r.status_code == 409 and r.json()["field"] == "volume"
    _vm(client, "other", start=False)
    r = client.post("/v1/vms/other/disks", json={"volume": "d-disk0.qcow2"})
    assert r.status_code == 409 and "used by" in r.json()["error"]
    for bad, field in (({}, "size_gib"), ({"size_gib": 1, "volume": "x"}, "size_gib"), ({"size_gib": 0}, "size_gib"),
                       ({"size_gib": 1, "shared": True}, "shared"), ({"volume": "nope.img"}, "volume"),
                       ({"size_gib": 1, "colour": 1}, "colour")):
        r = client.post("/v1/vms/d/disks", json=bad)
        assert r.status_code in (404, 422) and r.json()["field"] == field, (bad, r.text)

    # Remove: the volume is kept unless asked.
    r = client.delete("/v1/vms/d/disks/sda")
    assert r.status_code == 200 and r.json()["applied"] == {"disks": "now"}
    assert "data.img" not in _cfg(lv, "d") and client.get("/v1/storage/volumes/data.img").status_code == 200
    r = client.delete("/v1/vms/d/disks/vdb", params={"remove_volume": "true"})
    assert r.status_code == 200 and len(r.json()["disks"]) == 1
    assert client.get("/v1/storage/volumes/d-disk1.qcow2").status_code == 404
    assert client.delete("/v1/vms/d/disks/vdb").status_code == 404
    assert client.delete("/v1/vms/d/disks/xx").status_code == 422


def test_running_vm_gets_devices_live_or_at_next_start(client: httpx.Client, lv: libvirt.virConnect) -> None:
    _vm(client, "r", disks=[{"size_gib": 1}])
    r = client.post("/v1/vms/r/nics", json={"bridge": "br0"})
    assert r.status_code == 200, r.text
    mac = r.json()["device"]
    assert r.json()["applied"] == {"nics": "now"} and mac.startswith("52:54:00:")
    dom = lv.lookupByName("r")
    assert mac in dom.XMLDesc(0) and mac in _cfg(lv, "r")  # live and persistent
    r = client.post("/v1/vms/r/nics", json={"bridge": "br1", "mac": mac.upper()})
    assert r.status_code == 409 and r.json()["field"] == "mac"
    r = client.post("/v1/vms/r/nics", json={"bridge": "br0", "network": "default"})
    assert r.status_code == 422
    # The test driver cannot detach live: saved for the next start, and the API says so.
    r = client.delete(f"/v1/vms/r/nics/{mac}")
    assert r.status_code == 200 and r.json()["applied"] == {"nics": "next_start"}
    assert mac not in _cfg(lv, "r") and mac in dom.XMLDesc(0)
    r = client.delete("/v1/vms/r/disks/vda", params={"remove_volume": "true"})
    assert r.status_code == 409 and r.json()["field"] == "remove_volume" and "shut" in r.json()["hint"]
    assert client.delete("/v1/vms/r/nics/52:54:00:00:00:99").status_code == 404


def test_iso_insert_and_eject(client: httpx.Client, lv: libvirt.virConnect) -> None:
    for iso in ("a.iso", "b.iso"):  # (the test driver does not see uploaded files: volumes made through it)
        assert client.post("/v1/storage/volumes", json={"name": iso, "size_gib": 1, "format": "raw"}).status_code == 201
    _vm(client, "c", start=False)
    r = client.delete("/v1/vms/c/cdrom")
    assert r.status_code == 409 and "no CD-ROM" in r.json()["error"]
    r = client.put("/v1/vms/c/cdrom", json={"volume": "a.iso"})
    assert r.status_code == 200 and r.json()["applied"] == {"cdrom": "now"}, r.text
    assert r.json()["cdroms"] == [r.json()["cdroms"][0]] and r.json()["cdroms"][0].endswith("/a.iso")
    assert client.post("/v1/vms/c/start").status_code == 200
    # Running: the medium is changed live in the existing drive.
    r = client.put("/v1/vms/c/cdrom", json={"volume": "b.iso"})
    assert r.status_code == 200 and r.json()["applied"] == {"cdrom": "now"}
    assert "b.iso" in lv.lookupByName("c").XMLDesc(0) and "b.iso" in _cfg(lv, "c")
    r = client.delete("/v1/vms/c/cdrom")
    assert r.status_code == 200 and r.json()["cdroms"] == [] and "b.iso" not in _cfg(lv, "c")
    assert client.delete("/v1/storage/volumes/b.iso").status_code == 200  # no longer in use
    # A volume used as a disk cannot be inserted as media; an unknown volume is a 404.
    _vm(client, "w", start=False, disks=[{"size_gib": 1}])
    r = client.put("/v1/vms/c/cdrom", json={"volume": "w-disk0.qcow2"})
    assert r.status_code == 409 and r.json()["field"] == "volume"
    assert client.put("/v1/vms/c/cdrom", json={"volume": "none.iso"}).status_code == 404
    assert client.put("/v1/vms/c/cdrom", json={}).json()["field"] == "volume"
