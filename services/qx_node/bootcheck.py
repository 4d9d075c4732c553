"""``qx-node bootcheck``: wait until the node reports healthy and print one marker line per component.

The markers (``QUANTIX-SECURE-BOOT``, ``QUANTIX-NODE-HEALTHY``, ``QUANTIX-CONSOLE-READY``) go to stdout, which the
``qx-boot-report.service`` unit routes to the serial console, where the e2e tests read them.
Exit 0 once healthy, 1 when the timeout passes (printing ``QUANTIX-NODE-UNHEALTHY`` with the reason).
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path


def _context(url: str, cafile: Path | None) -> ssl.SSLContext | None:
    """Verify the node against its own certificate (created by qx-node on first start)."""
    if not url.startswith("https:"):
        return None
    if cafile is None:
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=str(cafile))


EFIVARS = Path("/sys/firmware/efi/efivars")
_GLOBAL_GUID = "8be4df61-93ca-11d2-aa0d-00e098032b8c"   # EFI_GLOBAL_VARIABLE: SecureBoot, SetupMode


def _efi_flag(efivars: Path, name: str) -> bool | None:
    """A one-byte UEFI global variable (efivarfs: 4 bytes of attributes, then the value); None if absent."""
    try:
        data = (efivars / f"{name}-{_GLOBAL_GUID}").read_bytes()
    except OSError:
        return None
    return len(data) >= 5 and data[4] == 1


def secure_boot_state(efivars: Path = EFIVARS) -> str:
    """What the firmware says: ``enabled`` (it verified what booted), ``setup-mode`` (no platform key
    yet: keys can be enrolled, nothing is verified), ``disabled``, or ``unsupported`` (no UEFI variables)."""
    if not efivars.is_dir():
        return "unsupported"
    if _efi_flag(efivars, "SecureBoot"):
        return "enabled"
    return "setup-mode" if _efi_flag(efivars, "SetupMode") else "disabled"


def fetch_health(url: str, timeout: float = 5.0, cafile: Path | None = None) -> tuple[int, dict[str, object]]:
    try:
        ctx = _context(url, cafile)  # per attempt: the certificate may appear while we wait
        with urllib.request.urlopen(url, timeout=timeout, context=ctx) as resp:  # noqa: S310 - url is ours
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.loads(e.read())
        except ValueError:
            return e.code, {}
    except (OSError, ValueError, ssl.SSLError) as e:
        return 0, {"error": str(e)}


def _failing(body: dict[str, object]) -> str:
    comps = body.get("components") if isinstance(body, dict) else None
    if not isinstance(comps, dict):
        return str(body.get("error", "no answer")) if isinstance(body, dict) else "no answer"
    return "; ".join(f"{n}: {c.get('detail')}" for n, c in comps.items() if isinstance(c, dict) and not c.get("ok"))


def wait_healthy(url: str, timeout: float, interval: float = 2.0,
                 report_every: float = 60.0, cafile: Path | None = None) -> tuple[bool, dict[str, object]]:
    """Poll until 200; every ``report_every`` seconds say what is still failing (for the console)."""
    start = time.monotonic()
    deadline = start + timeout
    next_report = start + report_every
    body: dict[str, object] = {}
    while True:
        status, body = fetch_health(url, cafile=cafile)
        if status == 200:
            return True, body
        now = time.monotonic()
        if now >= deadline:
            return False, body
        if now >= next_report:
            print(f"QUANTIX-NODE-WAITING after {now - start:.0f} s: {_failing(body)}", flush=True)
            next_report = now + report_every
        time.sleep(interval)


def ready_consoles(body: dict[str, object]) -> set[str]:
    """The terminals whose console reported ready, from the console component's ``running on a, b``."""
    comps = body.get("components") if isinstance(body, dict) else None
    console = comps.get("console") if isinstance(comps, dict) else None
    if not isinstance(console, dict) or not console.get("ok"):
        return set()
    detail = str(console.get("detail", ""))
    return {t.strip() for t in detail.removeprefix("running on ").split(",") if t.strip()}


def report(url: str, timeout: float, cafile: Path | None = None, expect_consoles: tuple[str, ...] = (),
           console_grace: float = 180.0, interval: float = 2.0) -> int:
    """Print the boot markers. The node is healthy once *one* console runs; the boot report also
    waits (up to ``console_grace`` s) for every console in ``expect_consoles`` — the serial one
    paints later than tty1 — so CONSOLE-READY names each terminal an operator can use, or says
    which one is missing."""
    # The firmware's own word on what booted (read-only, before the wait: it never changes in a boot).
    print(f"QUANTIX-SECURE-BOOT state={secure_boot_state()}", flush=True)
    ok, body = wait_healthy(url, timeout, cafile=cafile, interval=interval)
    version = body.get("version", "?") if isinstance(body, dict) else "?"
    if ok and expect_consoles:
        deadline = time.monotonic() + console_grace
        while not set(expect_consoles) <= ready_consoles(body) and time.monotonic() < deadline:
            time.sleep(interval)
            status, newer = fetch_health(url, cafile=cafile)
            if status == 200:
                body = newer
    ready = ready_consoles(body)
    if ready:
        missing = [t for t in expect_consoles if t not in ready]
        note = f" (not ready: {', '.join(missing)})" if missing else ""
        print(f"QUANTIX-CONSOLE-READY version={version} running on {', '.join(sorted(ready))}{note}", flush=True)
    if ok:
        print(f"QUANTIX-NODE-HEALTHY version={version} health={json.dumps(body, sort_keys=True)}", flush=True)
        return 0
    print(f"QUANTIX-NODE-UNHEALTHY health={json.dumps(body, sort_keys=True)}", flush=True)
    return 1
