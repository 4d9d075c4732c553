"""Removing a disk from a VM in the web client (headless Chromium, real qx-node over TLS, libvirt test:///default):
the dialog keeps the volume unless asked, a refusal is shown in the dialog with the API's reason and hint and
changes nothing, and a removal the running VM gets only at its next start says so — checked in libvirt and
in the pool each time."""

from __future__ import annotations

import libvirt

from .conftest import PASSWORD, WebLive
from .test_browser import Browser, browser  # noqa: F401 - the fixture


def test_remove_a_disk_keeping_its_volume_after_a_refusal(web: WebLive, browser: Browser,  # noqa: F811
                                                          lv: libvirt.virConnect) -> None:
    auth = {"Authorization": f"Bearer {web.live.token}"}
    with web.client(origin=False) as c:  # a pool volume on the driver's own VM, which runs
        r = c.post("/v1/vms/test/disks", headers=auth, json={"size_gib": 1})
        assert r.status_code == 200, r.text
        dev = r.json()["device"]
        path = next(d["path"] for d in r.json()["disk_devices"] if d["dev"] == dev)
    volume = path.rsplit("/", 1)[1]
    browser.sign_in(web.url, PASSWORD)
    browser.d.get(web.url + "/#/vms/test")
    row = f"#vm-disks li[data-dev='{dev}']"
    browser.text(row, volume)
    browser.click(f"{row} button[data-action='remove-disk']")
    browser.css("#disk-remove-dialog[open]")

    # Deleting the volume of a running VM is refused: the reason and the hint in the dialog, nothing changed.
    browser.click("#remove-volume")
    browser.click("#disk-remove-confirm")
    browser.text("#disk-remove-dialog .error", "is running")
    browser.text("#disk-remove-dialog .error", "shut the VM off first, or keep the volume")
    assert volume in lv.lookupByName("test").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)

    browser.click("#remove-volume")  # keep it
    browser.click("#disk-remove-confirm")
    browser.text("#vm-note", f"Disk {dev} removed at the next start")
    browser.text("#vm-note", "kept in the pool")
    browser.wait.until(lambda d: not d.find_elements("css selector", "#disk-remove-dialog[open]"))
    browser.text(row, "removed at the next start")  # the test driver cannot detach live
    assert volume not in lv.lookupByName("test").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    with web.client(origin=False) as c:  # still in the pool (the test driver keeps its volumes in memory)
        assert c.get(f"/v1/storage/volumes/{volume}", headers=auth).status_code == 200
    assert browser.severe(allowed=("409",)) == []
