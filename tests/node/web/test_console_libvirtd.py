"""The web client's VM console in headless Chromium against a real libvirtd + QEMU (TCG) guest: the page
asks the API for a one-time ticket (a CSRF-checked POST), opens noVNC over the node's WebSocket proxy,
and its canvas receives frames — the guest's VGA screen (SeaBIOS, then the kernel) drawn as non-black
pixels at the guest's resolution. The guest is tests/node/guest.py's tiny one (direct kernel boot),
created through the API with the token; libvirtd and virtlogd are this test's own children
(tests/node/test_libvirtd.py's fixtures)."""

from __future__ import annotations

from pathlib import Path

import httpx
import libvirt
import pytest
from fastapi import FastAPI
from selenium.webdriver.support.ui import WebDriverWait

from qx_common.passwords import hash_password
from tests.node import guest
from tests.node.conftest import LiveServer, make_settings
from tests.node.test_libvirtd import URI, Daemons, daemons, pool  # noqa: F401 - fixtures

from .conftest import PASSWORD
from .test_browser import Browser, chrome

pytestmark = [pytest.mark.root, pytest.mark.libvirtd]

LIT_PIXELS = """
const c = document.querySelector('#console-screen canvas');
if (!c || !c.width) return null;
const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let lit = 0;
for (let i = 0; i < d.length; i += 4) if (d[i] + d[i + 1] + d[i + 2] > 60) lit++;
return {width: c.width, height: c.height, lit: lit};
"""


def test_console_canvas_receives_frames(daemons: Daemons, pool: Path, tmp_path: Path) -> None:  # noqa: F811
    settings = make_settings(tmp_path, URI, pool_name="qx-test-pool")
    settings = type(settings)(**{**settings.__dict__, "pool_dir": pool})
    guest.build_guest(pool)
    shadow = tmp_path / "shadow"
    shadow.write_text(f"root:{hash_password(PASSWORD)}:20000:0:99999:7:::\n")

    def customize(app: FastAPI) -> None:
        app.state.shadow_file = shadow
        app.state.lockdown_file = tmp_path / "lockdown"

    with LiveServer(settings, customize) as live:
        c = httpx.Client(verify=str(live.cert), headers=live.auth, base_url=live.url, timeout=60)
        d = chrome(tmp_path)
        b = Browser(d)
        try:
            spec = {"name": "qx-web-con", "memory_mib": 128, "kernel": guest.KERNEL_NAME,
                    "initrd": guest.INITRD_NAME, "cmdline": guest.CMDLINE}
            assert c.post("/v1/vms", json=spec).status_code == 201
            b.sign_in(live.url, PASSWORD)
            b.text("#card-version", "Version")
            b.click("a[href='#/vms']")
            b.click("tr[data-vm='qx-web-con'] a[data-action='console']")
            b.text("#console-status", "connected")
            seen = WebDriverWait(d, 90, poll_frequency=0.5).until(
                lambda x: (lambda r: r if r and r["lit"] > 100 else None)(x.execute_script(LIT_PIXELS)))
            assert seen["width"] >= 640 and seen["height"] >= 400, seen
            b.click("a[href='#/vms']")  # leaving the page closes the console cleanly
            assert b.severe() == []
        finally:
            d.quit()
            c.delete("/v1/vms/qx-web-con", params={"force": "true"})
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
