"""The boot health gate: wait for qx-node's ``/health`` (libvirt, data, console) with a deadline.

``https://`` URLs are verified against qx-node's own certificate (``health_ca``); ``http://`` is
accepted for development. Returns ``(ok, reason)``; the reason names the failing components, as
qx-node reports them, so ``qx-update status`` can say why a boot was not blessed.

The gate waits only while the answer can still change: when systemd says the unit serving
``/health`` (:data:`SERVED_BY`) can no longer come up in this boot — masked, missing, or failed
with no restart pending — it fails at once with systemd's reason, instead of waiting out
``gate_timeout``. A failed trial boot then returns to the old slot minutes sooner. When systemd
cannot be asked (no systemd as PID 1, as in tests), the gate just keeps polling until its deadline.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from qx_common import run as r
from qx_common.errors import QxError

SERVED_BY = ("qx-node.service",)
# LoadStates of a unit that cannot be started in this boot (systemd.unit(5), "LoadState").
_UNSTARTABLE = ("masked", "not-found", "bad-setting", "error")


def _context(url: str, ca: Path) -> ssl.SSLContext | None:
    if not url.startswith("https://"):
        return None
    ctx = ssl.create_default_context(cafile=str(ca)) if ca.exists() else ssl.create_default_context()
    return ctx


def probe(url: str, ca: Path, timeout: float = 5.0) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=_context(url, ca)) as resp:  # noqa: S310
            body = json.loads(resp.read() or b"{}")
            return resp.status == 200, _describe(body) or "healthy"
    except urllib.error.HTTPError as e:
        try:
            body = json.loads(e.read() or b"{}")
        except ValueError:
            body = {}
        return False, _describe(body) or f"HTTP {e.code}"
    except (OSError, ValueError, ssl.SSLError) as e:
        return False, f"qx-node /health unreachable: {getattr(e, 'reason', e)}"


def _describe(body: object) -> str:
    comps = body.get("components") if isinstance(body, dict) else None
    if not isinstance(comps, dict):
        return ""
    bad = [f"{n}: {c.get('detail')}" for n, c in sorted(comps.items()) if isinstance(c, dict) and not c.get("ok")]
    return "; ".join(bad)


def unit_down(unit: str) -> str | None:
    """Why ``unit`` cannot come up any more in this boot, or None while it still may (or systemd can't tell).

    ``failed`` is final only because systemd reports a unit between restart attempts as
    ``activating``/``auto-restart``, not ``failed``: a crash-looping qx-node still gets its restarts.
    """
    try:
        p = r.run(["systemctl", "show", "--property=LoadState,ActiveState,SubState,Result", unit],
                  check=False, timeout=10)
    except QxError:
        return None
    if p.returncode != 0:
        return None
    props = dict(line.split("=", 1) for line in p.stdout.splitlines() if "=" in line)
    load = props.get("LoadState", "")
    if load in _UNSTARTABLE:
        return f"{unit} is {load}: it cannot start in this boot"
    if props.get("ActiveState") == "failed":
        return f"{unit} failed ({props.get('Result', 'unknown')}) and systemd will not restart it"
    return None


def wait(url: str, ca: Path, timeout: float, interval: float = 2.0, *,
         units: Sequence[str] = SERVED_BY, down: Callable[[str], str | None] = unit_down) -> tuple[bool, str]:
    """Poll ``url`` until it is healthy, ``timeout`` passes, or a unit in ``units`` is down for good."""
    deadline = time.monotonic() + timeout
    while True:
        ok, reason = probe(url, ca)
        if ok or time.monotonic() >= deadline:
            return ok, reason
        dead = [why for why in map(down, units) if why]
        if dead:
            return False, "; ".join(dead)
        time.sleep(min(interval, max(deadline - time.monotonic(), 0.05)))
