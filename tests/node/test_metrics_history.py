"""The last hour of host rates kept in qx-node (``GET /v1/host/metrics/history``, the dashboard's charts):
a ring of fixed size filled by the node's own sampler thread from real psutil readings, each sample also a
``stats`` event of ``/v1/events``."""

from __future__ import annotations

import dataclasses
import json

import httpx

from qx_node.settings import Settings
from qx_node.telemetry import HISTORY_COLUMNS, StatsHistory, StatsSampler
from tests.node.conftest import LiveServer, wait_for


def test_the_ring_keeps_the_newest_samples_in_order_and_never_grows() -> None:
    h = StatsHistory(interval=1.0, span=5.0)
    assert h.capacity == 5 and h.nbytes == len(HISTORY_COLUMNS) * 8 * 5
    assert h.series()["count"] == 0 and h.series()["t"] == []
    sampler = StatsSampler()
    for i in range(12):
        h.record(1000.0 + i, sampler.stats())  # real readings, synthetic times
        s = h.series()
        assert s["count"] == min(i + 1, 5) and h.nbytes == len(HISTORY_COLUMNS) * 8 * 5
        assert s["t"] == [1000.0 + j for j in range(max(0, i - 4), i + 1)]  # oldest first, the newest kept
        assert all(len(s[c]) == s["count"] for c in HISTORY_COLUMNS)
        assert all(0.0 <= v <= 100.0 for v in s["cpu"] + s["mem"]) and min(s["disk"] + s["net"]) >= 0.0
    # The node's default: one sample per 5 s for an hour, 720 samples in 34,560 bytes whatever the uptime.
    default = StatsHistory()
    assert (default.capacity, default.nbytes) == (720, 34560)


def test_the_node_samples_in_the_background_and_serves_the_history(settings: Settings) -> None:
    fast = dataclasses.replace(settings, history_interval=0.2)
    server = LiveServer(fast)
    with server as live, httpx.Client(base_url=live.url, verify=str(live.cert), headers=live.auth) as c:
        assert live.node.history.running
        got = wait_for(lambda: (b := c.get("/v1/host/metrics/history").json())["count"] >= 3 and b, 30,
                       "three background samples")
        assert got["interval_s"] == 0.2 and got["span_s"] == 3600.0
        assert got["t"] == sorted(got["t"]) and len(set(got["t"])) == len(got["t"])
        assert all(len(got[k]) == got["count"] for k in HISTORY_COLUMNS)
        assert httpx.get(f"{live.url}/v1/host/metrics/history", verify=str(live.cert)).status_code == 401
        # Each sample is also a "stats" event of the stream, the same values the history then serves.
        with c.stream("GET", "/v1/events") as r:
            ev = next(json.loads(line[6:]) for line in r.iter_lines()
                      if line.startswith("data: ") and json.loads(line[6:])["type"] == "stats")
        assert set(ev) >= {"type", "seq", "time", *HISTORY_COLUMNS}
        kept = c.get("/v1/host/metrics/history").json()
        i = kept["t"].index(ev["t"])
        assert all(kept[k][i] == ev[k] for k in HISTORY_COLUMNS)
    # Closing the node stops its sampler thread.
    assert not server.node.history.running
