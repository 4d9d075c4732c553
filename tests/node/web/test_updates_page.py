"""The host's updates in the web client, in a real headless Chromium against a real qx-node over TLS (the same
fixtures as test_browser.py), whose update routes run the real qx-update on a host of files with a real signed
TUF repository served on 127.0.0.1 (tests/node/conftest.py's ``update_host``). Every state the pages show is
qx-update's own: the channel set, a release found, installed with the task's progress, cancelled, refused; a
reboot is the test rewriting which slot is running (``write_config(running=...)``), as the boot would.
"""

from __future__ import annotations

from selenium.webdriver.support.ui import Select

from tests.node.conftest import UpdateHost
from tests.updates.conftest import payload

from .conftest import PASSWORD, WebLive
from .test_browser import Browser, browser  # noqa: F401 - the fixture

ALL = ["dev", "beta", "stable"]


def test_channel_check_install_cancel_and_refusal(web: WebLive, browser: Browser,  # noqa: F811
                                                  update_host: UpdateHost) -> None:
    browser.sign_in(web.url, PASSWORD)
    browser.text("#running-slot", "A (release 1.0.0)")
    browser.text("#update-state", "not checked yet (channel stable)")

    browser.click("a[href='#/host']")
    browser.text("#update-summary", "not checked yet")
    Select(browser.css("#channel")).select_by_value("beta")
    browser.click("#channel-save")
    browser.text("#update-note", "Channel set to beta.")
    assert 'channel = "beta"' in (update_host.host.dir / "override.toml").read_text()  # qx-update wrote it

    update_host.repo.add_release("1.1.0", slot_bytes=payload(31), channels=ALL)
    browser.click("#update-check")
    browser.text("#update-summary", "1.1.0 available (channel beta)")
    browser.text("#update-last-check", "available 1.1.0")
    browser.click("#update-apply")
    browser.text("#update-task", "succeeded")
    browser.text("#update-note", "installed 1.1.0 into slot B")
    browser.text("#update-summary", "1.1.0 installed: reboot to start it")
    browser.text("#update-slots tr[data-slot='b']", "1.1.0")
    assert browser.css("#update-task progress").get_attribute("value") == "100"
    browser.text("#update-rollback-btn", "Cancel 1.1.0")

    browser.click("a[href='#/']")
    browser.text("#update-state", "1.1.0 installed: reboot to start it")

    browser.click("a[href='#/host']")
    browser.click("#update-rollback-btn")
    browser.d.switch_to.alert.accept()
    browser.text("#update-note", "cancelled the update to 1.1.0")
    browser.text("#update-slots tr[data-slot='b']", "bad")
    # Nothing left to go back to: qx-update's refusal, its reason shown (409).
    browser.click("#update-rollback-btn")
    browser.d.switch_to.alert.accept()
    browser.text("section .error", "slot B holds no bootable release")
    assert browser.severe(allowed=("409",)) == []


def test_rolled_back_and_why_on_the_dashboard(web: WebLive, browser: Browser,  # noqa: F811
                                              update_host: UpdateHost) -> None:
    update_host.repo.add_release("1.1.0", slot_bytes=payload(32), channels=ALL)
    browser.sign_in(web.url, PASSWORD)
    browser.click("a[href='#/host']")
    browser.click("#update-check")
    browser.click("#update-apply")
    browser.text("#update-summary", "1.1.0 installed: reboot to start it")
    update_host.host.write_config(running="b")  # the reboot into slot B: 1.1.0 on trial
    browser.d.refresh()
    browser.text("#update-summary", "on trial")
    browser.text("#update-slots tr[data-slot='b']", "running")
    browser.click("#update-rollback-btn")
    browser.d.switch_to.alert.accept()
    browser.text("#update-note", "reboot to start slot A")
    update_host.host.write_config(running="a")  # the reboot back into slot A
    browser.click("a[href='#/']")
    browser.text("#update-state", "rolled back from 1.1.0")
    browser.text("#update-rollback", "the operator asked for it")
    browser.text("#running-slot", "A (release 1.0.0)")
    assert browser.severe() == []
