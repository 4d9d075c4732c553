"""The whole web flow against a real libvirtd + QEMU (TCG), in headless Chromium: sign in with the root
password, upload an ISO (the storage page's upload), create a VM from it with the wizard (a new disk, the
ISO as boot CD), see its console canvas receive frames through noVNC over the node's WebSocket proxy — the
guest's VGA screen (SeaBIOS trying the CD, which is not bootable: any screen will do) drawn as non-black
pixels at the guest's resolution — power it off, clone it from its page (the task followed to its end),
delete the clone and it with their disks; then the serial console page
shows tests/node/guest.py's tiny guest printing its READY marker (typed keys are sent, not checked: that
guest reads no input). libvirtd and virtlogd are this
test's own children (tests/node/test_libvirtd.py's fixtures)."""

from __future__ import annotations

from pathlib import Path

import httpx
import libvirt
import pytest
from fastapi import FastAPI
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from qx_common.passwords import hash_password
from tests.node import guest
from tests.node.conftest import LiveServer, make_settings
from tests.node.test_libvirtd import URI, Daemons, daemons, pool  # noqa: F401 - fixtures

from .conftest import PASSWORD
from .test_browser import Browser, chrome, vm_state

pytestmark = [pytest.mark.root, pytest.mark.libvirtd]

LIT_PIXELS = """
const c = document.querySelector('#console-screen canvas');
if (!c || !c.width) return null;
const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let lit = 0;
for (let i = 0; i < d.length; i += 4) if (d[i] + d[i + 1] + d[i + 2] > 60) lit++;
return {width: c.width, height: c.height, lit: lit};
"""


def test_upload_create_console_frames_stop_delete(daemons: Daemons, pool: Path, tmp_path: Path) -> None:  # noqa: F811
    settings = make_settings(tmp_path, URI, pool_name="qx-test-pool")
    settings = type(settings)(**{**settings.__dict__, "pool_dir": pool})
    shadow = tmp_path / "shadow"
    shadow.write_text(f"root:{hash_password(PASSWORD)}:20000:0:99999:7:::\n")
    iso = tmp_path / "blank.iso"
    iso.write_bytes(bytes(2 * 1024 * 1024))

    def customize(app: FastAPI) -> None:
        app.state.shadow_file = shadow
        app.state.lockdown_file = tmp_path / "lockdown"

    with LiveServer(settings, customize) as live:
        c = httpx.Client(verify=str(live.cert), headers=live.auth, base_url=live.url, timeout=60)
        d = chrome(tmp_path)
        b = Browser(d)
        try:
            b.sign_in(live.url, PASSWORD)
            b.text("#card-version", "Version")
            b.click("a[href='#/storage']")
            b.css("#iso").send_keys(str(iso))
            b.click("#iso-upload button[type='submit']")
            b.text("#upload-state", "blank.iso: uploaded")
            b.wait.until(lambda x: "blank.iso" in x.find_element(By.ID, "volumes").text)

            b.click("a[href='#/vms']")
            b.click("#new-vm")
            b.css("#vm-name").send_keys("qx-web-con")
            for sel, value in (("#vm-memory", "128"), ("#vm-disk", "1")):
                el = b.css(sel)
                el.clear()
                el.send_keys(value)
            b.wait.until(lambda x: len(x.find_elements(By.CSS_SELECTOR, "#vm-iso option")) > 1)
            Select(b.css("#vm-iso")).select_by_value("blank.iso")
            b.click("#create-submit")
            b.wait.until(lambda x: vm_state(b, "qx-web-con") == "running")
            xml = c.get("/v1/vms/qx-web-con").json()
            assert "blank.iso" in str(xml), xml

            b.click("tr[data-vm='qx-web-con'] a[data-action='console']")
            b.text("#console-status", "connected")
            seen = WebDriverWait(d, 90, poll_frequency=0.5).until(
                lambda x: (lambda r: r if r and r["lit"] > 100 else None)(x.execute_script(LIT_PIXELS)))
            assert seen["width"] >= 640 and seen["height"] >= 400, seen

            b.click("a[href='#/vms']")  # leaving the page closes the console
            b.click("tr[data-vm='qx-web-con'] button[data-action='stop']")
            b.wait.until(lambda x: vm_state(b, "qx-web-con") == "shutoff")
            # Clone it from its page (a task: the page follows its progress to the end), then delete the clone.
            b.click("tr[data-vm='qx-web-con'] a[data-action='open']")
            b.css("#clone-name").send_keys("qx-web-con2")
            b.click("#clone button[type='submit']")
            b.text("#clone-task", "succeeded")
            assert (pool / "qx-web-con2-disk0.qcow2").exists(), sorted(p.name for p in pool.iterdir())
            b.click("a[href='#/vms']")
            b.click("tr[data-vm='qx-web-con2'] button[data-action='delete']")
            b.click("#remove-disks")
            b.click("#delete-confirm")
            b.wait.until(lambda x: vm_state(b, "qx-web-con2") is None)
            b.click("tr[data-vm='qx-web-con'] button[data-action='delete']")
            b.click("#remove-disks")
            b.click("#delete-confirm")
            b.wait.until(lambda x: vm_state(b, "qx-web-con") is None)
            assert not [p.name for p in pool.iterdir() if p.name.startswith("qx-web-con")]
            assert (pool / "blank.iso").exists()  # the ISO is not the VM's disk: it stays

            # The serial console page: tests/node/guest.py's tiny guest prints its READY marker on ttyS0.
            guest.build_guest(pool)
            spec = {"name": "qx-web-ser", "memory_mib": 128, "kernel": guest.KERNEL_NAME,
                    "initrd": guest.INITRD_NAME, "cmdline": guest.CMDLINE}
            assert c.post("/v1/vms?wait=true", json=spec).status_code == 201
            b.wait.until(lambda x: vm_state(b, "qx-web-ser") == "running")
            b.click("tr[data-vm='qx-web-ser'] a[data-action='serial']")
            b.text("#serial-status", "connected")
            WebDriverWait(d, 90, poll_frequency=0.5).until(
                lambda x: guest.READY in x.find_element(By.ID, "serial-screen").text)
            b.click("a[href='#/vms']")
            assert b.severe() == []
        finally:
            d.quit()
            for vm in ("qx-web-con", "qx-web-con2", "qx-web-ser"):
                c.delete(f"/v1/vms/{vm}", params={"force": "true", "remove_disks": "true"})
            c.close()
            conn = libvirt.open(URI)
            try:
                p = conn.storagePoolLookupByName("qx-test-pool")
                if p.isActive():
                    p.destroy()
                p.undefine()
            except libvirt.libvirtError:
                pass
            conn.close()
