"""``qx-node bootcheck``: wait until the node reports healthy and print one marker line per component.

The markers (``QUANTIX-NODE-HEALTHY``, ``QUANTIX-CONSOLE-READY``) go to stdout, which the
``qx-boot-report.service`` unit routes to the serial console, where the e2e tests read them.
Exit 0 once healthy, 1 when the timeout passes (printing ``QUANTIX-NODE-UNHEALTHY`` with the reason).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request


def fetch_health(url: str, timeout: float = 5.0) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - url is ours
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.loads(e.read())
        except ValueError:
            return e.code, {}
    except (OSError, ValueError) as e:
        return 0, {"error": str(e)}


def wait_healthy(url: str, timeout: float, interval: float = 2.0) -> tuple[bool, dict[str, object]]:
    deadline = time.monotonic() + timeout
    body: dict[str, object] = {}
    while True:
        status, body = fetch_health(url)
        if status == 200:
            return True, body
        if time.monotonic() >= deadline:
            return False, body
        time.sleep(interval)


def report(url: str, timeout: float) -> int:
    ok, body = wait_healthy(url, timeout)
    comps = body.get("components", {}) if isinstance(body, dict) else {}
    version = body.get("version", "?") if isinstance(body, dict) else "?"
    console = comps.get("console", {}) if isinstance(comps, dict) else {}
    if isinstance(console, dict) and console.get("ok"):
        print(f"QUANTIX-CONSOLE-READY version={version} {console.get('detail', '')}", flush=True)
    if ok:
        print(f"QUANTIX-NODE-HEALTHY version={version} health={json.dumps(body, sort_keys=True)}", flush=True)
        return 0
    print(f"QUANTIX-NODE-UNHEALTHY health={json.dumps(body, sort_keys=True)}", flush=True)
    return 1
