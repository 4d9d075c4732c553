"""The web client in a real headless Chromium (selenium + chromedriver) against a real qx-node over TLS
(libvirt test:///default): sign in with the root password, upload an ISO, create a VM with the wizard, start it, power it
off, delete it with its disks — checked each time in libvirt itself; a wrong password is refused and locks
the source out; a POST without the CSRF token is refused; the pages work without a JavaScript error
(every SEVERE entry of the browser's console fails the test, unless a test names the one it expects).

Needs the Debian packages ``chromium`` and ``chromium-driver`` (tests/host-packages.txt). Nothing sleeps:
every wait is a WebDriverWait on what the page shows. The VM console (noVNC) needs a real VNC server, so
its flow is in test_console_libvirtd.py (real libvirtd + QEMU).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from .conftest import PASSWORD, WebLive

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def chrome(tmp_path: Path, width: int = 1280, height: int = 900) -> webdriver.Chrome:
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 f"--window-size={width},{height}", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        opts.add_argument(flag)
    opts.accept_insecure_certs = True  # the node's self-signed certificate, as an operator accepts it once
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER,
                                                            log_output=str(tmp_path / "chromedriver.log")))
    driver.set_page_load_timeout(30)
    return driver


class Browser:
    def __init__(self, driver: webdriver.Chrome) -> None:
        self.d = driver
        self.wait = WebDriverWait(driver, 20)
        self.logs: list[dict[str, Any]] = []

    def severe(self, allowed: tuple[str, ...] = ()) -> list[str]:
        self.logs += self.d.get_log("browser")
        return [e["message"] for e in self.logs
                if e["level"] == "SEVERE" and not any(a in e["message"] for a in allowed)]

    def css(self, sel: str) -> Any:
        return self.wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, sel)))

    def click(self, sel: str) -> None:
        def attempt(d: webdriver.Chrome) -> bool:
            try:
                el = d.find_element(By.CSS_SELECTOR, sel)
                if not el.is_enabled():
                    return False
                el.click()
                return True
            except StaleElementReferenceException:
                return False
        self.wait.until(attempt)

    def text(self, sel: str, contains: str) -> None:
        self.wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, sel), contains))

    def sign_in(self, url: str, secret: str) -> None:
        self.d.get(url + "/")
        box = self.css("#secret")
        box.clear()
        box.send_keys(secret + Keys.ENTER)  # the keyboard alone signs in


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    d = chrome(tmp_path)
    try:
        yield Browser(d)
    finally:
        d.quit()


def vm_state(browser: Browser, name: str) -> str | None:
    return browser.d.execute_script(
        "const tr = document.querySelector(`#vm-table tr[data-vm='${arguments[0]}']`); return tr ? tr.dataset.state : null;",
        name)


def test_sign_in_create_start_stop_delete(web: WebLive, browser: Browser, lv: libvirt.virConnect,
                                         tmp_path: Path) -> None:
    browser.sign_in(web.url, PASSWORD)
    browser.text("#card-version", "Version")
    browser.text("#card-health", "libvirt: ok")
    browser.wait.until(lambda d: d.find_element(By.ID, "chart-cpu").get_attribute("data-ready") == "1")
    browser.text("#vm-total", "1")  # the test driver's own "test" VM

    iso = tmp_path / "tiny.iso"
    iso.write_bytes(b"CD001" * 200_000)  # 1 MB: the upload's progress and result, not a bootable CD
    browser.click("a[href='#/storage']")
    browser.css("#iso").send_keys(str(iso))
    browser.click("#iso-upload button[type='submit']")
    # Finished and the bytes are in the pool. (The test driver's pool does not list files it did not make,
    # so choosing the ISO in the wizard is proven in test_console_libvirtd.py.)
    browser.text("#upload-state", "tiny.iso: uploaded")
    assert (web.live.node.settings.pool_dir / "tiny.iso").read_bytes() == iso.read_bytes()

    browser.click("a[href='#/vms']")
    browser.click("#new-vm")
    browser.css("#vm-name").send_keys("web1")
    for sel, value in (("#vm-vcpus", "2"), ("#vm-memory", "256"), ("#vm-disk", "1")):
        el = browser.css(sel)
        el.clear()
        el.send_keys(value)
    browser.wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#vm-nic option")) > 1)
    Select(browser.css("#vm-nic")).select_by_value("network:default")
    browser.click("#vm-start")  # created shut off; started from the list below
    browser.click("#create-submit")
    browser.wait.until(lambda d: vm_state(browser, "web1") == "shutoff")
    dom = lv.lookupByName("web1")
    assert dom.maxMemory() == 256 * 1024 and dom.info()[3] == 2
    assert "<source network='default'" in dom.XMLDesc()

    browser.click("tr[data-vm='web1'] button[data-action='start']")
    browser.wait.until(lambda d: vm_state(browser, "web1") == "running")
    assert lv.lookupByName("web1").isActive()
    browser.click("a[href='#/']")  # the dashboard lists what its event stream has seen
    browser.text("#events", "VM web1: started")
    browser.click("a[href='#/vms']")
    browser.click("tr[data-vm='web1'] button[data-action='stop']")
    browser.wait.until(lambda d: vm_state(browser, "web1") == "shutoff")
    assert not lv.lookupByName("web1").isActive()

    def volumes() -> set[str]:
        with web.client(origin=False) as c:
            got = c.get("/v1/storage/volumes", headers={"Authorization": f"Bearer {web.live.token}"})
            return {v["name"] for v in got.json()}

    disks = {v for v in volumes() if v.startswith("web1")}
    assert disks  # the wizard's 1 GiB disk, a volume in the pool
    browser.click("tr[data-vm='web1'] button[data-action='delete']")
    browser.click("#remove-disks")
    browser.click("#delete-confirm")
    browser.wait.until(lambda d: vm_state(browser, "web1") is None)
    assert "web1" not in lv.listDefinedDomains()
    assert not disks & volumes()  # "also delete its disks" was ticked

    browser.click("#sign-out")
    browser.css("#secret")
    assert browser.severe() == []


def test_wrong_password_is_refused_and_locks_out(web: WebLive, browser: Browser) -> None:
    for _ in range(5):
        browser.sign_in(web.url, "wrong-password")
        browser.text("[role=alert]", "wrong password")
    browser.sign_in(web.url, PASSWORD)  # the right one, now refused too
    browser.text("[role=alert]", "too many failed sign-ins")
    assert browser.d.execute_script("return document.body.dataset.signedIn") == "0"
    # The refusals are the page's expected answers (401, 429 on /ui/login); nothing else may be logged.
    assert browser.severe(allowed=("/ui/login - Failed to load resource",)) == []


def test_a_post_without_the_csrf_token_is_refused(web: WebLive, browser: Browser, lv: libvirt.virConnect) -> None:
    browser.sign_in(web.url, PASSWORD)
    browser.text("#card-version", "Version")
    status = browser.d.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch('/v1/vms/test/stop', {method: 'POST', credentials: 'same-origin'}).then((r) => done(r.status));")
    assert status == 403
    assert lv.lookupByName("test").isActive()
    assert browser.severe(allowed=("/v1/vms/test/stop - Failed to load resource",)) == []


def test_every_page_renders_without_errors_on_a_narrow_screen(web: WebLive, tmp_path: Path) -> None:
    d = chrome(tmp_path, 600, 900)
    b = Browser(d)
    try:
        b.sign_in(web.url, PASSWORD)
        b.text("#card-version", "Version")
        b.click("button.menu")  # the navigation folds into a menu on a narrow screen
        for href, marker in (("#/vms", "#vm-table"), ("#/vms/new", "#create-vm"), ("#/storage", "#volumes"),
                             ("#/networks", "#net-title"), ("#/host", "#host-title"), ("#/", "#card-health")):
            d.get(web.url + "/" + href)
            b.css(marker)
            # Keyboard focus moves to the new page's heading (Tab then continues from there).
            b.wait.until(lambda x: x.execute_script("return document.activeElement.tagName") == "H1")
        assert b.severe() == []
    finally:
        d.quit()


def test_maintenance_mode_and_charts_from_the_host_page(web: WebLive, browser: Browser) -> None:
    browser.sign_in(web.url, PASSWORD)
    for chart in ("chart-cpu", "chart-mem", "chart-disk", "chart-net"):
        browser.wait.until(lambda d, c=chart: d.find_element(By.ID, c).get_attribute("data-ready") == "1")
    browser.click("a[href='#/host']")
    browser.text("#maint-state", "off")
    browser.click("#maint-toggle")
    browser.text("#maint-state", "on")
    assert web.live.node.config.current.maintenance is True
    browser.click("#host-reboot")
    browser.d.switch_to.alert.accept()  # the confirm step
    browser.text("#host-note", "will reboot")
    web.live.node.power.done.wait(10)  # type: ignore[attr-defined]
    assert web.live.node.power.actions == ["reboot"]  # type: ignore[attr-defined]
    browser.click("#maint-toggle")
    browser.text("#maint-state", "off")
    assert browser.severe() == []



def test_vm_page_edits_snapshots_and_clones(web: WebLive, browser: Browser, lv: libvirt.virConnect) -> None:
    with web.client(origin=False) as c:  # a VM whose disk is a pool volume (the driver's own "test" has none)
        r = c.post("/v1/vms?wait=true", headers={"Authorization": f"Bearer {web.live.token}"},
                   json={"name": "web2", "vcpus": 2, "memory_mib": 256, "disks": [{"size_gib": 1}], "start": False})
        assert r.status_code == 201, r.text
        r = c.post("/v1/storage/volumes", headers={"Authorization": f"Bearer {web.live.token}"},
                   json={"name": "media.iso", "size_gib": 1, "format": "raw"})  # an ISO the driver lists
        assert r.status_code == 201, r.text
    browser.sign_in(web.url, PASSWORD)
    browser.click("a[href='#/vms']")
    browser.click("tr[data-vm='web2'] a[data-action='open']")
    browser.text("#vm-state", "shutoff")
    for sel, value in (("#edit-vcpus", "1"), ("#edit-memory", "512"), ("#edit-description", "from the web")):
        el = browser.css(sel)
        el.clear()
        el.send_keys(value)
    browser.click("#edit-save")
    browser.text("#vm-note", "Saved")
    dom = lv.lookupByName("web2")
    assert dom.info()[3] == 1 and dom.maxMemory() == 512 * 1024 and "from the web" in dom.XMLDesc()

    disk = browser.css("#disk-gib")
    disk.clear()
    disk.send_keys("2")
    browser.click("#disk-add button[type='submit']")
    browser.text("#vm-note", "Disk added")
    assert dom.XMLDesc().count("<disk type=") == 2
    Select(browser.css("#nic-on")).select_by_value("network:default")
    browser.click("#nic-add button[type='submit']")
    browser.text("#vm-note", "Network adapter added")
    mac = browser.css("#vm-nics li[data-mac]").get_attribute("data-mac")
    assert f"<mac address='{mac}'/>" in dom.XMLDesc()
    browser.click(f"#vm-nics li[data-mac='{mac}'] button[data-action='remove-nic']")
    browser.d.switch_to.alert.accept()
    browser.text("#vm-note", "Network adapter removed")
    assert mac not in dom.XMLDesc()

    browser.wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#cd-iso option")) > 1)
    Select(browser.css("#cd-iso")).select_by_value("media.iso")
    browser.click("#cd-insert button[type='submit']")
    browser.text("#vm-note", "media.iso inserted")
    assert "media.iso" in dom.XMLDesc()
    browser.click("#cd-eject")
    browser.text("#vm-note", "CD ejected")
    assert "media.iso" not in dom.XMLDesc()

    browser.css("#snap-name").send_keys("before")
    browser.click("#snap-create button[type='submit']")
    browser.text("#snap-task", "Snapshot before: succeeded")  # the page followed the task (202) to its end
    browser.css("tr[data-snapshot='before']")
    assert dom.snapshotListNames() == ["before"]
    browser.click("tr[data-snapshot='before'] button[data-action='delete']")
    browser.d.switch_to.alert.accept()
    browser.wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, "tr[data-snapshot='before']"))
    assert dom.snapshotListNames() == []

    # The test driver's volumes are no files, so its clone task fails: the page shows the API's reason.
    # (A clone that succeeds, on real files, is in test_console_libvirtd.py.)
    browser.css("#clone-name").send_keys("web2-copy")
    browser.click("#clone button[type='submit']")
    browser.text("[role=alert]", "cannot be read")
    assert "web2-copy" not in lv.listDefinedDomains()
    assert browser.severe(allowed=("/v1/vms/web2/clone - Failed to load resource",)) == []


def test_storage_and_network_deletes_say_why_they_are_refused(web: WebLive, browser: Browser) -> None:
    auth = {"Authorization": f"Bearer {web.live.token}"}
    with web.client(origin=False) as c:
        assert c.post("/v1/storage/volumes", headers=auth, json={"name": "spare", "size_gib": 1}).status_code == 201
        assert c.post("/v1/vms?wait=true", headers=auth, json={"name": "web3", "memory_mib": 128, "start": False,
                                                     "disks": [{"volume": "spare"}]}).status_code == 201
        assert c.post("/v1/storage/volumes", headers=auth, json={"name": "loose", "size_gib": 1}).status_code == 201
    browser.sign_in(web.url, PASSWORD)
    browser.click("a[href='#/storage']")
    browser.click("tr[data-volume='spare'] button[data-action='delete']")
    browser.d.switch_to.alert.accept()
    browser.text("[role=alert]", "web3")  # in use by that VM: refused, and the page says by whom
    browser.click("tr[data-volume='loose'] button[data-action='delete']")
    browser.d.switch_to.alert.accept()
    browser.wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, "tr[data-volume='loose']"))
    with web.client(origin=False) as c:
        names = {v["name"] for v in c.get("/v1/storage/volumes", headers=auth).json()}
    assert "spare" in names and "loose" not in names

    browser.click("a[href='#/networks']")
    browser.click("tr[data-network='default'] button[data-action='delete']")
    browser.d.switch_to.alert.accept()
    browser.text("[role=alert]", "test")  # the driver's "test" VM has a NIC on it
    assert browser.severe(allowed=("Failed to load resource: the server responded with a status of 409",)) == []


def test_the_error_check_sees_a_javascript_error(web: WebLive, browser: Browser) -> None:
    """The SEVERE-log check the other tests end with is not blind: an uncaught error in the page shows."""
    browser.sign_in(web.url, PASSWORD)
    browser.text("#card-version", "Version")
    assert browser.severe() == []
    browser.d.execute_script("setTimeout(() => { throw new Error('qx-planted-error'); }, 0);")
    WebDriverWait(browser.d, 10).until(lambda d: any("qx-planted-error" in m for m in browser.severe()))


def test_an_iso_upload_can_be_cancelled(web: WebLive, browser: Browser, tmp_path: Path) -> None:
    """Chromium's own network throttling (DevTools) slows the upload to 2 MB/s so that Cancel comes mid-way;
    the page says so, the node's upload task ends, and no ISO is left in the pool."""
    iso = tmp_path / "big.iso"
    iso.write_bytes(bytes(40 * 1024 * 1024))
    browser.sign_in(web.url, PASSWORD)
    browser.click("a[href='#/storage']")
    browser.d.execute_cdp_cmd("Network.enable", {})
    browser.d.execute_cdp_cmd("Network.emulateNetworkConditions", {
        "offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 2 * 1024 * 1024})
    browser.css("#iso").send_keys(str(iso))
    browser.click("#iso-upload button[type='submit']")
    browser.click("#upload-cancel")
    browser.text("#upload-state", "big.iso: cancelled")
    browser.d.execute_cdp_cmd("Network.emulateNetworkConditions", {
        "offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})

    def upload_task() -> dict[str, Any] | None:
        with web.client(origin=False) as c:
            tasks = c.get("/v1/tasks", headers={"Authorization": f"Bearer {web.live.token}"}).json()
        return next((t for t in tasks if t["kind"] == "upload" and t["state"] != "running"), None)

    WebDriverWait(browser.d, 30).until(lambda d: upload_task())
    assert not (web.live.node.settings.pool_dir / "big.iso").exists()
    assert browser.severe() == []
