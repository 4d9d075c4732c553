"""The admin page in a real headless Chromium (selenium + chromedriver) against the real server.

Publish through qx-release, open /admin, enter a token, promote through the page's own button, and
see a host's check-in (POST /v1/checkin) appear in the fleet table. Needs the Debian packages
``chromium`` and ``chromium-driver`` (tests/host-packages.txt).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from .conftest import ALL, qx_release, verify_repo

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log")))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def test_promote_from_the_page_and_see_a_checkin(server, browser, tmp_path, make_release):
    token = server.token(*ALL)
    qx_release(server, token, "keys", "init")
    qx_release(server, token, "publish", "--channel", "dev", str(make_release("0.2.0")))
    wait = WebDriverWait(browser, 20)

    browser.get(server.url + "/admin")
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.ID, "use-token").click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, 'table[data-channel="dev"] tr[data-release="0.2.0"]')))
    assert not browser.find_elements(By.CSS_SELECTOR, 'table[data-channel="beta"] tr[data-release="0.2.0"]')
    assert browser.find_element(By.CSS_SELECTOR, 'tr[data-role="timestamp"]').is_displayed()

    browser.find_element(By.CSS_SELECTOR, '[data-action="promote-0.2.0-beta"]').click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, 'table[data-channel="beta"] tr[data-release="0.2.0"]')))
    assert browser.find_element(By.ID, "status").text == "promote 0.2.0 to beta: done"
    # the click really signed new metadata: a TUF client sees the release in beta
    root_v1 = requests.get(server.url + "/metadata/1.root.json", timeout=5).content
    assert verify_repo(server.url, root_v1, tmp_path)["0.2.0/quantix-os_0.2.0.efi"]["channels"] == ["dev", "beta"]

    checkin = server.token("checkin")
    r = requests.post(server.url + "/v1/checkin", headers={"Authorization": f"Bearer {checkin}"}, timeout=5,
                      json={"host_id": "node-7", "version": "0.2.0", "slot": "b", "channel": "beta",
                            "health": "bad", "last_error": "gate: qx-node /health timed out"})
    assert r.status_code == 204
    row = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, 'tr[data-host="node-7"]')))  # page polls
    cells = [td.text for td in row.find_elements(By.TAG_NAME, "td")]
    assert cells[:4] == ["node-7", "0.2.0", "b", "beta"]
    assert cells[5:] == ["bad", "gate: qx-node /health timed out"]
