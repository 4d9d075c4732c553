"""Fleet check-in: tell the update server what this host runs (``POST <server_url>v1/checkin``).

Sent after ``check``, ``apply``, ``gate`` and ``blessed`` — so the fleet view sees a host find an
update, install it, pass or fail its health gate and roll back — whenever a check-in token is
configured (``checkin_token_file``, on the data partition, root-only; a token with the ``checkin``
scope from ``qx-update-server token create``). Without a token nothing is sent.

Best effort by design: the repository hosts update from is static and needs no server process, so
a check-in that fails (server down, proxy, bad token) is logged and recorded in the state
(``last_checkin``) but never fails the command that triggered it.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

_log = logging.getLogger("qx-update")
TIMEOUT = 5.0  # s: a check-in must not hold up a boot's health gate
HOST_KEY_HEADER = "X-Quantix-Host-Key"
HOST_KEY_FILE = "host-key"   # in the state directory (data partition), mode 0600


def host_key(state_dir: Path) -> str:
    """This host's own check-in secret: made once (random, 43 URL-safe characters), then kept. The server
    binds it to the host id at the first check-in, so another host's token cannot report as this host."""
    import secrets

    from qx_common.fs import atomic_write

    path = state_dir / HOST_KEY_FILE
    try:
        key = path.read_text().strip()
        if len(key) >= 32:
            return key
    except OSError:
        pass
    key = secrets.token_urlsafe(32)
    atomic_write(path, key + "\n", mode=0o600)
    return key


def read_token(path: Path) -> str | None:
    try:
        token = path.read_text().strip()
    except OSError:
        return None
    return token or None


def health_of(gate: dict[str, Any] | None, rollback: dict[str, Any] | None) -> str:
    """The fleet's health word for this host: its running slot's gate verdict, degraded after a rollback."""
    if gate is not None and not gate.get("ok"):
        return "bad"
    if rollback:
        return "degraded"  # running and healthy, but the update it tried did not stick
    if gate is not None:
        return "good"
    return "unknown"


def send(server_url: str, token: str, body: dict[str, Any], timeout: float = TIMEOUT, *,
         key: str | None = None) -> tuple[bool, str]:
    """POST the check-in; returns (ok, what happened) and never raises for transport or HTTP errors."""
    if not server_url.startswith(("http://", "https://")):
        return False, f"not sent: {server_url or 'no server_url'} is not an http(s) server"
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    if key:
        headers[HOST_KEY_HEADER] = key
    req = urllib.request.Request(server_url + "v1/checkin", data=json.dumps(body).encode(), method="POST",
                                 headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - URL scheme checked above
            return True, f"HTTP {resp.status}"
    except urllib.error.HTTPError as e:
        detail = e.read()[:300].decode(errors="replace")
        return False, f"HTTP {e.code}: {detail}"
    except (OSError, ValueError) as e:
        return False, f"server unreachable: {getattr(e, 'reason', e)}"
