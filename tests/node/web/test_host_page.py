"""The host page's services and certificate sections in a real headless Chromium against a real qx-node
over TLS (the same fixtures as test_browser.py).

The services table shows what ``GET /v1/host/services`` answers from the real ``systemctl``: on this
machine systemd is not PID 1, so the page must show every unit as ``unknown`` and say why. The
fingerprint on the page must be the SHA-256 of the certificate file the server serves (tests/node/
test_hostservices.py compares the route with the TLS peer certificate itself).
"""

from __future__ import annotations

import hashlib
import ssl
from pathlib import Path

from selenium.webdriver.common.by import By

from qx_node import hostservices

from .conftest import PASSWORD, WebLive
from .test_browser import Browser, browser  # noqa: F401 - the fixture

SYSTEMD_IS_INIT = Path("/run/systemd/system").is_dir()


def test_host_page_shows_services_and_the_certificate_fingerprint(web: WebLive, browser: Browser) -> None:  # noqa: F811
    browser.sign_in(web.url, PASSWORD)
    browser.click("a[href='#/host']")
    browser.css("#services tbody tr")
    rows = browser.d.find_elements(By.CSS_SELECTOR, "#services tbody tr")
    assert [r.get_attribute("data-unit") for r in rows] == [u for u, _ in hostservices.UNITS]
    if not SYSTEMD_IS_INIT:
        browser.text("#services-reason", "systemctl cannot tell")
        assert {r.get_attribute("data-state") for r in rows} == {"unknown"}
    pem = web.live.cert.read_text()
    digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest().upper()
    browser.text("#cert-sha256", ":".join(digest[i:i + 2] for i in range(0, len(digest), 2)))
    browser.click("#services-reload")  # refreshing keeps the table (and raises no error)
    browser.css("#services tbody tr")
    assert browser.severe() == []


def test_host_page_rotates_the_api_token(web: WebLive, browser: Browser) -> None:  # noqa: F811
    old = web.live.node.token
    browser.sign_in(web.url, PASSWORD)
    browser.click("a[href='#/host']")
    browser.click("#token-rotate")
    browser.d.switch_to.alert.accept()  # the confirm step
    shown = browser.css("#token-value").text
    assert shown == web.live.node.token != old
    assert web.live.node.settings.token_path.read_text().strip() == shown
    # The password session that rotated goes on working.
    browser.click("a[href='#/storage']")
    browser.css("#volumes")
    assert browser.severe() == []


def test_host_page_filters_the_journal(web: WebLive, browser: Browser) -> None:  # noqa: F811
    browser.sign_in(web.url, PASSWORD)
    browser.click("a[href='#/host']")
    # This machine has no journal files: journalctl answers nothing, and the page says so.
    browser.css("#journal-empty, #journal, #journal-reason")
    box = browser.css("#journal-unit")
    box.send_keys("--help")
    browser.click("#journal-show")
    browser.text("section .error", "unit")  # refused by the API (never an option for journalctl)
    box.clear()
    box.send_keys("qx-node.service")
    browser.css("#journal-grep").send_keys("started")
    browser.click("#journal-show")
    browser.wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, "section .error"))
    browser.css("#journal-empty, #journal")
    assert browser.severe(allowed=("422",)) == []
