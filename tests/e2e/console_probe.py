"""The console's real host backend on the booted OS (run by agent.py with the image's venv python).

The unit tests drive these actions through the in-memory backend, since systemd is not PID 1 on the
build machines; here the same ``LinuxBackend`` the console uses talks to the real systemd, journald
and sshd of the booted image. Each check is recorded (result or error) and printed as one JSON
document; the e2e test asserts on it.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from typing import Any

from qx_console.linux import LinuxBackend


def _check(out: dict[str, Any], name: str, fn: Callable[[], Any]) -> None:
    try:
        out[name] = fn()
    except Exception as e:  # recorded for the test to show, not raised: the other checks still run
        out[name] = {"error": f"{type(e).__name__}: {e}"}


def _unit_active(unit: str) -> str:
    return subprocess.run(["systemctl", "is-active", unit], capture_output=True, text=True).stdout.strip()


def main() -> None:
    be = LinuxBackend()
    out: dict[str, Any] = {}
    _check(out, "ssh_before", lambda: be.ssh_state().active)
    _check(out, "ssh_enable", lambda: be.set_ssh(True, 5))
    _check(out, "ssh_on", lambda: be.ssh_state().active)
    _check(out, "ssh_off_timer", lambda: _unit_active("qx-ssh-off.timer"))
    _check(out, "fingerprints", be.ssh_fingerprints)
    _check(out, "ssh_disable", lambda: be.set_ssh(False, 0))
    _check(out, "ssh_after", lambda: be.ssh_state().active)
    _check(out, "ssh_off_timer_after", lambda: _unit_active("qx-ssh-off.timer"))
    _check(out, "logs_qx_node", lambda: be.logs("qx-node", lines=50))
    _check(out, "logs_kernel_count", lambda: len(be.logs("kernel", lines=50)))
    _check(out, "logs_grep", lambda: be.logs("system", grep="quantix", lines=20))
    _check(out, "services", lambda: {s.name: s.active for s in be.services()})
    _check(out, "restart_resolved", lambda: be.restart_service("systemd-resolved"))
    _check(out, "resolved_after_restart", lambda: _unit_active("systemd-resolved.service"))
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
