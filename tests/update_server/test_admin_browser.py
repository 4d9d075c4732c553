"""The admin page in a real headless Chromium (selenium + chromedriver) against the real server.

Publish through qx-release, open /admin, enter a token, and use the page's own controls: promote,
yank (through its confirm dialog), rollout percentage and pause/resume — each time checking with
python-tuf's ngclient that the click really changed the signed metadata. See a host's check-in
(POST /v1/checkin) appear in the fleet table, and key expiry warnings for metadata signed to expire
soon. Needs the Debian packages ``chromium`` and ``chromium-driver`` (tests/host-packages.txt).

The page polls the API every 3 s; nothing here sleeps: every wait is a WebDriverWait on what the
page shows (``body[data-loaded]`` changes on each completed poll).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tuf.api.metadata import Metadata, Root

from .conftest import ALL, Server, qx_release, sign_expiring_soon, verify_repo

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


def trusted_root(server: Server) -> bytes:
    """Root version 1, what a host ships with and bootstraps ngclient from."""
    return requests.get(server.url + "/metadata/1.root.json", timeout=5).content


def open_admin(browser: webdriver.Chrome, server: Server, token: str) -> WebDriverWait:
    """Open /admin, enter the token, and wait for the first complete poll of the API."""
    browser.get(server.url + "/admin")
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.ID, "use-token").click()
    # The page re-renders on every poll: an element found a moment ago may be stale when read; try again.
    wait = WebDriverWait(browser, 20, ignored_exceptions=(StaleElementReferenceException,))
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "body[data-loaded]")))
    return wait


def click(wait: WebDriverWait, css: str) -> None:
    """Click the element; if a poll re-rendered it in between (stale), find it again."""
    def attempt(d: webdriver.Chrome) -> bool:
        try:
            d.find_element(By.CSS_SELECTOR, css).click()
            return True
        except StaleElementReferenceException:
            return False
    wait.until(attempt)


def wait_for_poll(browser: webdriver.Chrome, wait: WebDriverWait) -> None:
    """Wait until the page has completed one more poll of the API (and re-rendered what changed)."""
    before = browser.find_element(By.TAG_NAME, "body").get_attribute("data-loaded")
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") != before)


def shown_channels(browser: webdriver.Chrome, version: str) -> list[str]:
    """The channels whose table on the page has a row for ``version`` (read in one step, so never stale)."""
    return browser.execute_script(
        "return [...document.querySelectorAll(`table[data-channel] tr[data-release='${arguments[0]}']`)]"
        ".map((tr) => tr.closest('table').dataset.channel);", version)


def rollout_cell(browser: webdriver.Chrome, version: str) -> str:
    """The rollout column of ``version``'s row in the dev table (every release is on dev)."""
    return browser.execute_script(
        "const tr = document.querySelector(`table[data-channel='dev'] tr[data-release='${arguments[0]}']`);"
        "return tr ? tr.cells[2].textContent : null;", version)


def fleet_row(browser: webdriver.Chrome, host: str) -> list[str] | None:
    """The cells of ``host``'s row in the fleet table (read in one step: the table is re-rendered on each poll)."""
    return browser.execute_script(
        "const tr = document.querySelector(`#fleet-table tr[data-host='${arguments[0]}']`);"
        "return tr ? [...tr.cells].map((td) => td.textContent) : null;", host)


def key_rows(browser: webdriver.Chrome) -> dict[str, dict[str, Any]]:
    """role -> {cells, expiring} of the signing key table (read in one step: re-rendered on each poll)."""
    return browser.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('#key-table tr[data-role]')].map((tr) =>"
        " [tr.dataset.role, {cells: [...tr.cells].map((td) => td.textContent),"
        "                   expiring: tr.classList.contains('expiring')}]));")


def signed(server: Server, tmp_path: Path, version: str) -> list[dict[str, Any]]:
    """custom.quantix of every target of ``version``, as python-tuf's ngclient verified it."""
    verified = verify_repo(server.url, trusted_root(server), tmp_path)
    out = [q for q in verified.values() if q["version"] == version]
    assert sorted(q["artifact"] for q in out) == ["root", "uki"], verified
    return out


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
    cells = wait.until(lambda d: fleet_row(d, "node-7"))  # the page polls
    assert cells[:4] == ["node-7", "0.2.0", "b", "beta"]
    assert cells[5:] == ["bad", "gate: qx-node /health timed out", "unverified"]  # no host key sent


def test_yank_from_the_page(server, browser, tmp_path, make_release):
    token = server.token(*ALL)
    qx_release(server, token, "keys", "init")
    qx_release(server, token, "publish", "--channel", "dev", str(make_release("0.2.0")))
    qx_release(server, token, "publish", "--channel", "dev", str(make_release("0.3.0")))
    qx_release(server, token, "promote", "0.2.0", "--to", "beta")
    wait = open_admin(browser, server, token)
    assert shown_channels(browser, "0.2.0") == ["dev", "beta"]
    assert not browser.find_elements(By.CSS_SELECTOR, "p.yanked")

    # The button asks first; dismissing the dialog changes nothing, on the page or in the repository.
    click(wait, '[data-action="yank-0.2.0"]')
    dialog = wait.until(ec.alert_is_present())
    assert dialog.text == "Yank 0.2.0? Hosts will no longer be offered it."
    dialog.dismiss()
    wait_for_poll(browser, wait)
    assert shown_channels(browser, "0.2.0") == ["dev", "beta"]
    assert {q["yanked"] for q in signed(server, tmp_path, "0.2.0")} == {False}

    click(wait, '[data-action="yank-0.2.0"]')
    wait.until(ec.alert_is_present()).accept()
    wait.until(lambda d: not shown_channels(d, "0.2.0"))
    assert browser.find_element(By.ID, "status").text == "yank 0.2.0: done"
    assert browser.find_element(By.CSS_SELECTOR, "p.yanked").text == "yanked: 0.2.0"
    assert shown_channels(browser, "0.3.0") == ["dev"]  # only the yanked release left its channel
    assert browser.find_element(By.CSS_SELECTOR, "#channel-list .channel:nth-child(2) h3").text == "beta (0)"

    # The click really signed new metadata: ngclient sees 0.2.0 yanked and on no channel, 0.3.0 untouched.
    for q in signed(server, tmp_path, "0.2.0"):
        assert (q["yanked"], q["channels"]) == (True, []), q
    for q in signed(server, tmp_path, "0.3.0"):
        assert (q["yanked"], q["channels"]) == (False, ["dev"]), q


def test_rollout_percentage_and_pause_from_the_page(server, browser, tmp_path, make_release):
    token = server.token(*ALL)
    qx_release(server, token, "keys", "init")
    qx_release(server, token, "publish", "--channel", "dev", str(make_release("0.2.0")))
    start = signed(server, tmp_path, "0.2.0")[0]["rollout"]["start"]
    assert {str(q["rollout"]["fraction"]) for q in signed(server, tmp_path, "0.2.0")} == {"1"}
    wait = open_admin(browser, server, token)
    assert rollout_cell(browser, "0.2.0") == f"100% since {start}"

    field = browser.find_element(By.CSS_SELECTOR, '[data-input="percent-0.2.0"]')
    field.clear()
    field.send_keys("25")
    # A poll between typing and clicking must not reset the field to the signed value.
    wait_for_poll(browser, wait)
    assert browser.find_element(By.CSS_SELECTOR, '[data-input="percent-0.2.0"]').get_attribute("value") == "25"
    click(wait, '[data-action="rollout-0.2.0"]')
    wait.until(lambda d: rollout_cell(d, "0.2.0") == f"25% since {start}")
    assert browser.find_element(By.ID, "status").text == "rollout 0.2.0 to 25%: done"
    for q in signed(server, tmp_path, "0.2.0"):
        assert q["rollout"] == {"fraction": "0.25", "start": start, "paused": False}, q

    click(wait, '[data-action="pause-0.2.0"]')
    wait.until(lambda d: rollout_cell(d, "0.2.0") == f"25% (paused) since {start}")
    assert browser.find_element(By.ID, "status").text == "pause 0.2.0: done"
    assert browser.find_element(By.CSS_SELECTOR, '[data-action="pause-0.2.0"]').text == "resume"
    for q in signed(server, tmp_path, "0.2.0"):
        assert q["rollout"] == {"fraction": "0.25", "start": start, "paused": True}, q

    click(wait, '[data-action="pause-0.2.0"]')  # now labelled resume
    wait.until(lambda d: rollout_cell(d, "0.2.0") == f"25% since {start}")
    assert browser.find_element(By.ID, "status").text == "resume 0.2.0: done"
    for q in signed(server, tmp_path, "0.2.0"):
        assert q["rollout"] == {"fraction": "0.25", "start": start, "paused": False}, q


def test_key_expiry_warnings(server_no_resign, browser, tmp_path):
    server = server_no_resign
    token = server.token(*ALL)
    # Real signed metadata, through the repository's own API: root expires in 55 days (under the 60
    # days at which root needs an operator), timestamp in 4 hours (under half its 12 h renewal margin,
    # so the server has failed to renew it). Targets and snapshot are far from expiry.
    sign_expiring_soon(server.data_dir, root_left=dt.timedelta(days=55), timestamp_left=dt.timedelta(hours=4))
    verify_repo(server.url, trusted_root(server), tmp_path)  # expiring soon, not expired: hosts still update
    wait = open_admin(browser, server, token)

    warnings = wait.until(lambda d: d.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('#key-warnings [data-warning]')]"
        ".map((w) => [w.dataset.warning, w.textContent]));"))
    assert sorted(warnings) == ["root", "timestamp"], warnings
    assert re.fullmatch(r"root expires in 5[45] days: run qx-release keys rotate", warnings["root"]), warnings
    assert re.fullmatch(r"timestamp expires in [34]:\d\d:\d\d and was not renewed: is the server running\?",
                        warnings["timestamp"]), warnings
    assert browser.find_element(By.ID, "key-warnings").is_displayed()
    # This server made its own root keys (keys init through the API): the page says it is a development setup.
    assert browser.find_element(By.ID, "root-keys").text == "root keys: on this server (development)"
    rows = key_rows(browser)
    assert [role for role, r in rows.items() if r["expiring"]] == ["root", "timestamp"], rows
    # the table shows the expiry that is really signed in root.json
    root = Metadata[Root].from_bytes(trusted_root(server)).signed
    assert rows["root"]["cells"][2] == root.expires.strftime("%Y-%m-%dT%H:%M:%SZ")

    # Rotating gives a new root for a year and re-signs the chain: the warnings go away.
    qx_release(server, token, "keys", "rotate")
    wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, "#key-warnings [data-warning]"))
    rows = key_rows(browser)
    assert not [role for role, r in rows.items() if r["expiring"]], rows
    assert rows["root"]["cells"][1] == "2"
    verify_repo(server.url, trusted_root(server), tmp_path)


def test_fleet_is_paged_and_the_page_is_locked_down(server, browser, tmp_path):
    """450 hosts: the page shows 200 with the totals and pages through the rest; CSP forbids inline script."""
    token = server.token(*ALL)
    qx_release(server, token, "keys", "init")
    from qx_update_server.storage import SQLiteStorage

    db = SQLiteStorage(server.data_dir / "server.db")
    for i in range(450):
        db.checkin({"host_id": f"h-{i:03d}", "version": "0.2.0", "slot": "a", "channel": "dev",
                    "health": "bad" if i < 50 else "good", "last_error": None})
    db.close()
    r = requests.get(server.url + "/admin", timeout=5)
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"
    wait = open_admin(browser, server, token)
    rows = lambda: browser.execute_script(  # noqa: E731
        "return [...document.querySelectorAll('#fleet-table tr[data-host]')].map((tr) => tr.dataset.host);")
    wait.until(lambda d: len(rows()) == 200)
    assert rows()[0] == "h-000" and rows()[-1] == "h-199"
    assert "450 hosts" in browser.find_element(By.ID, "fleet-summary").text
    assert "bad: 50" in browser.find_element(By.ID, "fleet-summary").text
    click(wait, "#fleet-next")
    wait.until(lambda d: rows()[:1] == ["h-200"])
    click(wait, "#fleet-next")
    wait.until(lambda d: rows()[:1] == ["h-400"] and len(rows()) == 50)
    assert browser.find_element(By.ID, "fleet-next").get_attribute("disabled") is not None
    click(wait, "#fleet-prev")
    wait.until(lambda d: rows()[:1] == ["h-200"])
    # the page's script ran under the CSP without a violation (none is inline)
    assert not [e for e in browser.get_log("browser") if "Content Security Policy" in e.get("message", "")]


def test_tokens_listed_and_revoked_from_the_page(server, browser):
    admin = server.token(*ALL, "tokens", name="page-admin")
    leaked = server.token("read", name="leaked")
    auth = {"Authorization": f"Bearer {leaked}"}
    assert requests.get(server.url + "/v1/releases", headers=auth, timeout=5).status_code == 200
    leaked_id = next(t["id"] for t in requests.get(server.url + "/v1/tokens", timeout=5, headers={
        "Authorization": f"Bearer {admin}"}).json()["tokens"] if t["name"] == "leaked")
    wait = open_admin(browser, server, admin)
    cells = wait.until(lambda d: [td.text for td in d.find_element(
        By.CSS_SELECTOR, f'tr[data-token="{leaked_id}"]').find_elements(By.TAG_NAME, "td")])
    assert cells[:3] == [leaked_id, "leaked", "read"] and cells[6] == "active"
    assert leaked not in browser.page_source and admin not in browser.page_source  # no secret on the page

    click(wait, f'[data-action="revoke-{leaked_id}"]')
    dialog = wait.until(ec.alert_is_present())
    assert dialog.text.startswith(f"Revoke token leaked ({leaked_id})?")
    dialog.accept()
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, f'tr[data-token="{leaked_id}"] td:nth-child(7)')
               .text.startswith("revoked "))
    assert browser.find_element(By.ID, "status").text == "revoke leaked: done"
    assert requests.get(server.url + "/v1/releases", headers=auth, timeout=5).status_code == 401

    # a token without the tokens scope still gets the page; the tokens section says why it is empty
    browser.execute_script("sessionStorage.clear();")
    wait = open_admin(browser, server, server.token("read"))
    assert "lacks the tokens scope" in browser.find_element(By.ID, "tokens-note").text
    assert not browser.find_elements(By.CSS_SELECTOR, "#token-table tbody tr")
