"""The boot health gate: wait for qx-node's ``/health`` (libvirt, data, console) with a deadline.

``https://`` URLs are verified against qx-node's own certificate (``health_ca``); ``http://`` is
accepted for development. Returns ``(ok, reason)``; the reason names the failing components, as
qx-node reports them, so ``qx-update status`` can say why a boot was not blessed.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path


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


def wait(url: str, ca: Path, timeout: float, interval: float = 2.0) -> tuple[bool, str]:
    deadline = time.monotonic() + timeout
    while True:
        ok, reason = probe(url, ca)
        if ok or time.monotonic() >= deadline:
            return ok, reason
        time.sleep(min(interval, max(deadline - time.monotonic(), 0.05)))
