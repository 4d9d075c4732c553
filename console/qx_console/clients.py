"""Clients of the other Quantix services: the qx-node API and the qx-update command.

Both are optional from the console's point of view: a node that is down shows as "unreachable",
an absent or failing ``qx-update`` as :class:`~qx_console.backend.BackendUnavailable` with the reason.
Neither ever fakes a result. Short timeouts: these are called from workers, but a stuck call would
still delay the next status refresh.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import requests

from qx_common.errors import EnvironmentError_, ExternalError
from qx_common.run import run, spawn, which

from qx_console.backend import ProgressFn, SlotInfo, BackendUnavailable, UpdateState

NODE_URL = "https://127.0.0.1:8443"


class NodeClient:
    def __init__(self, base_url: str, cert: Path | None, token_file: Path | None, timeout_s: float = 2.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.cert = cert
        self.token_file = token_file
        self.timeout_s = timeout_s
        self._session = requests.Session()

    def _get(self, path: str, auth: bool) -> Any:
        headers = {}
        if auth and self.token_file is not None:
            try:
                headers["Authorization"] = "Bearer " + self.token_file.read_text().strip()
            except OSError as e:
                raise ExternalError(f"no API token ({self.token_file}: {e.strerror})") from e
        verify: bool | str = str(self.cert) if self.cert and self.cert.exists() else False
        if self.base_url.startswith("http://"):
            verify = True
        try:
            r = self._session.get(self.base_url + path, headers=headers, timeout=self.timeout_s, verify=verify)
            r.raise_for_status()
            return r.json()
        except (requests.RequestException, ValueError) as e:
            raise ExternalError(f"qx-node unreachable ({type(e).__name__})") from e

    def health(self) -> dict[str, Any]:
        return self._get("/health", auth=False)

    def vms(self) -> list[dict[str, Any]]:
        data = self._get("/v1/vms", auth=True)
        if isinstance(data, dict):
            data = data.get("vms", data.get("items", []))
        return list(data)


class UpdateClient:
    """``qx-update --json <verb>`` (``--json`` is qx-update's global flag, before the verb); one JSON
    document on stdout (indented). ``apply`` may also print JSON lines with done/total or percent
    before it, which move the progress bar."""

    def __init__(self, command: Sequence[str] = ("qx-update",), timeout_s: float = 30.0) -> None:
        self.command = list(command)
        self.timeout_s = timeout_s

    def _require(self) -> None:
        if "/" not in self.command[0] and which(self.command[0]) is None:
            raise BackendUnavailable(f"'{self.command[0]}' is not installed on this host")
        if "/" in self.command[0] and not Path(self.command[0]).exists():
            raise BackendUnavailable(f"'{self.command[0]}' is not installed on this host")

    def _call(self, args: list[str], timeout: float | None = None) -> dict[str, Any]:
        self._require()
        try:
            proc = run([*self.command, "--json", *args], check=False, timeout=timeout or self.timeout_s)
        except ExternalError as e:
            raise BackendUnavailable(f"qx-update {args[0]}: {e}") from e
        data = _last_json(proc.stdout)
        if proc.returncode != 0:
            msg = (data or {}).get("error") or (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise ExternalError(f"qx-update {args[0]} failed: {msg}")
        if data is None:
            raise BackendUnavailable(f"qx-update {args[0]} printed no JSON")
        return data

    def status(self) -> UpdateState:
        return _state(self._call(["status"]))

    def check(self) -> UpdateState:
        return _state(self._call(["check"], timeout=120))

    def rollback(self) -> str:
        d = self._call(["rollback"])
        return str(d.get("message") or "rollback scheduled: the other slot boots next")

    def set_channel(self, name: str) -> None:
        self._call(["channel", "set", name])

    def apply(self, progress: ProgressFn) -> str:
        """Stream ``apply --json``: every line with done/total (or percent) moves the progress bar."""
        self._require()
        argv = [*self.command, "--json", "apply"]
        # The one streaming call: spawn() gives it run()'s clean environment and keeps stderr off a pipe.
        last: dict[str, Any] = {}
        text = ""
        progress(0.0, "installing into the other slot...")
        try:
            with spawn(argv, text=True, check=False, wait_timeout=None) as proc:
                assert proc.stdout is not None
                for line in proc.stdout:
                    text += line
                    try:
                        ev = json.loads(line)
                    except ValueError:
                        continue
                    if not isinstance(ev, dict):
                        continue
                    last = ev
                    frac = _fraction(ev)
                    if frac is not None:
                        progress(frac, str(ev.get("message") or ev.get("phase") or ""))
        except EnvironmentError_ as e:
            raise BackendUnavailable(f"qx-update apply: {e}") from e
        err = proc.stderr_text()
        rc = proc.returncode
        last = _last_json(text) or last
        if rc != 0:
            msg = last.get("error") or (err.strip().splitlines() or [f"exit code {rc}"])[-1]
            raise ExternalError(f"qx-update apply failed: {msg}")
        progress(1.0, "done")
        if last.get("message"):
            return str(last["message"])
        applied = last.get("applied")
        if isinstance(applied, dict) and last.get("slot"):
            return f"installed {applied.get('version')} into slot {str(last['slot']).upper()}; reboot to start it"
        return "qx-update apply finished"


def _fraction(ev: dict[str, Any]) -> float | None:
    if isinstance(ev.get("percent"), (int, float)):
        return max(0.0, min(1.0, ev["percent"] / 100))
    done, total = ev.get("done"), ev.get("total")
    if isinstance(done, (int, float)) and isinstance(total, (int, float)) and total > 0:
        return max(0.0, min(1.0, done / total))
    return None


def _last_json(text: str) -> dict[str, Any] | None:
    text = text.strip()
    try:
        d = json.loads(text)
        return d if isinstance(d, dict) else None
    except ValueError:
        pass
    for line in reversed(text.splitlines()):
        try:
            d = json.loads(line)
            if isinstance(d, dict):
                return d
        except ValueError:
            continue
    return None


def _state(d: dict[str, Any]) -> UpdateState:
    """Accept the shapes qx-update documents: slots as a list or a {a: {...}, b: {...}} map.

    ``status --json`` reports what its last check found as ``last_check`` ({at, result: up-to-date |
    available | error, version}) and an update installed in the other slot, waiting for a reboot, as
    ``pending`` ({slot, version, ...}; in the running slot it is the running release on trial, not an
    update). ``check --json`` reports ``available`` ({version, ...} or null) and ``installed``."""
    raw_slots = d.get("slots") or []
    if isinstance(raw_slots, dict):
        raw_slots = [dict(v, name=k) for k, v in raw_slots.items()]
    active = str(d.get("active_slot") or d.get("running_slot") or d.get("booted_slot") or "")
    slots = []
    for s in raw_slots:
        name = str(s.get("name") or s.get("slot") or "?")
        slots.append(SlotInfo(
            name=name,
            version=str(s.get("version") or ""),
            active=bool(s.get("active", name == active)),
            blessed=s.get("blessed", s.get("good")),
            bad=bool(s.get("bad", False)),
        ))
    avail = d.get("available") or d.get("update") or ""
    if isinstance(avail, dict):
        avail = str(avail.get("version") or "")
    last_check = d.get("last_check") if isinstance(d.get("last_check"), dict) else {}
    result = str(last_check.get("result") or "")
    if not avail and result == "available":
        avail = str(last_check.get("version") or "")
    pending = d.get("pending") or ""
    if isinstance(pending, dict):
        in_running = bool(active) and str(pending.get("slot") or "") == active
        pending = "" if in_running else str(pending.get("version") or "")
    if d.get("installed") is True and avail:  # check: the release found is in the other slot already
        pending = pending or str(avail)
    running = {s.version for s in slots if s.active and s.version}
    if str(avail) in ({str(pending)} | running):  # what the check found is installed or running already
        avail = ""
    return UpdateState(slots=slots, channel=str(d.get("channel") or ""), available=str(avail),
                       pending=str(pending), last_check=result, detail=str(d.get("message") or ""), raw=d)
