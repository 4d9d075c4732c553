"""The state of the host's own services, read with ``systemctl show`` (read-only), and the API
certificate's fingerprint.

Call order: :func:`services` runs one ``systemctl show --property=... -- UNIT...`` through
:func:`qx_common.run.run` for the fixed list :data:`UNITS` (never a unit name from a request: this
route takes no input) and parses it with :func:`parse_show`. It never raises for a host without
systemd as PID 1 (a container, the test machine), without ``systemctl``, or with a unit that does
not exist: every unit is then reported with state ``unknown`` and the answer says why
(``available: false``, ``reason``) — the page shows that instead of a 500.

:func:`cert_fingerprint` is the SHA-256 of the certificate's DER bytes, the figure a browser shows
for the node's self-signed certificate, so that an operator can compare it before accepting it. It is
read with the standard library's PEM decoder: ``cryptography`` stays out of the serving process
(``qx_node.serve.ensure_cert_apart``).
"""

from __future__ import annotations

import hashlib
import ssl
from pathlib import Path
from typing import Any

from qx_common import run as runner
from qx_common.errors import EnvironmentError_, ExternalError

# The units an operator of a Quantix host cares about, in the order the page shows them.
UNITS: tuple[tuple[str, str], ...] = (
    ("qx-node.service", "the node API and this web client"),
    ("libvirtd.service", "the virtual machines"),
    ("virtlogd.service", "the VMs' log files"),
    ("systemd-networkd.service", "the host's network"),
    ("systemd-resolved.service", "name resolution"),
    ("systemd-timesyncd.service", "the clock"),
    ("ssh.service", "remote shell (SSH)"),
    ("qx-update.timer", "the update check"),
    ("qx-health-gate.service", "the boot health gate of an update"),
    ("qx-console@tty1.service", "the console on the screen"),
    ("qx-console-serial@ttyS0.service", "the console on the serial port"),
)
PROPERTIES = ("Id", "LoadState", "ActiveState", "SubState", "UnitFileState", "ActiveEnterTimestamp", "MainPID",
              "Result")
STATES = ("active", "reloading", "inactive", "failed", "activating", "deactivating", "maintenance", "refreshing",
          "unknown")
SHOW_TIMEOUT = 10.0


def parse_show(text: str) -> dict[str, dict[str, str]]:
    """``systemctl show`` output (``Key=Value`` lines, one blank line between units) by unit Id.

    A block without ``Id`` is dropped; a line without ``=`` is ignored (never an exception: the
    text comes from another program)."""
    units: dict[str, dict[str, str]] = {}
    for block in text.split("\n\n"):
        props: dict[str, str] = {}
        for line in block.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                props[key] = value
        if props.get("Id"):
            units[props["Id"]] = props
    return units


def _entry(unit: str, purpose: str, props: dict[str, str] | None) -> dict[str, Any]:
    if props is None:
        return {"unit": unit, "purpose": purpose, "state": "unknown", "sub_state": None, "enabled": None,
                "since": None, "main_pid": None, "result": None}
    if props.get("LoadState") == "not-found":
        return {"unit": unit, "purpose": purpose, "state": "unknown", "sub_state": "not-found", "enabled": None,
                "since": None, "main_pid": None, "result": None}
    state = props.get("ActiveState", "unknown")
    pid = props.get("MainPID", "")
    return {"unit": unit, "purpose": purpose, "state": state if state in STATES else "unknown",
            "sub_state": props.get("SubState") or None, "enabled": props.get("UnitFileState") or None,
            "since": props.get("ActiveEnterTimestamp") or None,
            "main_pid": int(pid) if pid.isdigit() and int(pid) > 0 else None, "result": props.get("Result") or None}


def services(systemctl: str = "systemctl") -> dict[str, Any]:
    """``{"available", "reason", "services": [...]}``; ``reason`` is null when systemctl answered."""
    argv = [systemctl, "show", "--no-pager", f"--property={','.join(PROPERTIES)}", "--",
            *(u for u, _ in UNITS)]
    try:
        out = runner.run(argv, timeout=SHOW_TIMEOUT).stdout
    except (ExternalError, EnvironmentError_) as e:
        # No systemd as PID 1 (a container, the build machine) or no systemctl: say so, per unit "unknown".
        return {"available": False, "reason": f"systemctl cannot tell: {e}",
                "services": [_entry(u, p, None) for u, p in UNITS]}
    got = parse_show(out)
    return {"available": True, "reason": None, "services": [_entry(u, p, got.get(u)) for u, p in UNITS]}


def cert_fingerprint(cert_path: Path) -> dict[str, Any]:
    """``{"sha256", "path", "reason"}``: the certificate's SHA-256 fingerprint over its DER bytes,
    colon-separated upper-case hex as browsers show it; null with the reason when the file cannot be read
    or holds no certificate (qx-node served without TLS, as in the in-process tests)."""
    try:
        der = ssl.PEM_cert_to_DER_cert(cert_path.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as e:
        return {"sha256": None, "path": str(cert_path), "reason": f"cannot read the API certificate: {e}"}
    digest = hashlib.sha256(der).hexdigest().upper()
    return {"sha256": ":".join(digest[i:i + 2] for i in range(0, len(digest), 2)), "path": str(cert_path),
            "reason": None}
