"""The dashboard's charts in a real headless Chromium against a real qx-node over TLS: they start with the hour
qx-node kept before the page opened (``GET /v1/host/metrics/history``, its background sampler), then go on
live with the same sampler's ``stats`` events on ``/v1/events`` (the page no longer polls)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from selenium.webdriver.common.by import By

from qx_common.passwords import hash_password
from qx_node.settings import Settings
from tests.node.conftest import LiveServer, wait_for

from .conftest import PASSWORD, WebLive
from .test_browser import Browser, browser  # noqa: F401 - the fixture


@pytest.fixture
def web_history(settings: Settings, tmp_path: Path) -> Iterator[WebLive]:
    """A node sampling its history fast (every 0.2 s), so that it holds samples from before the page opened."""
    shadow = tmp_path / "shadow"
    shadow.write_text(f"root:{hash_password(PASSWORD)}:20000:0:99999:7:::\n")

    def customize(app: FastAPI) -> None:
        app.state.shadow_file = shadow
        app.state.lockdown_file = tmp_path / "lockdown"

    with LiveServer(dataclasses.replace(settings, history_interval=0.2), customize) as lv:
        yield WebLive(lv, shadow, tmp_path / "lockdown")


def test_charts_start_with_the_kept_history(web_history: WebLive, browser: Browser) -> None:  # noqa: F811
    node = web_history.live.node
    wait_for(lambda: node.history.series()["count"] >= 5, 30, "five samples kept before the page opens")
    oldest = node.history.series()["t"][0]
    browser.sign_in(web_history.url, PASSWORD)
    for chart in ("chart-cpu", "chart-mem", "chart-disk", "chart-net"):
        # The chart's first point is the node's oldest kept sample, from before the page opened
        # (the page's own samples start when it opens), and it holds at least the five.
        browser.wait.until(lambda d, c=chart: d.find_element(By.ID, c).get_attribute("data-first") == str(oldest)
                           or float(d.find_element(By.ID, c).get_attribute("data-first") or "inf") == oldest)
        assert int(browser.css(f"#{chart}").get_attribute("data-points")) >= 5
    # Then live from the event stream's "stats" samples (the same sampler): the charts grow without any poll.
    kept = int(browser.css("#chart-cpu").get_attribute("data-points"))
    browser.wait.until(lambda d: int(d.find_element(By.ID, "chart-cpu").get_attribute("data-points")) >= kept + 3)
    assert browser.d.execute_script(
        "return performance.getEntriesByType('resource').filter((e) => e.name.includes('/v1/host/stats')).length") == 0
    assert browser.severe() == []
