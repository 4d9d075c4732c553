"""The host-side update state: ``<state_dir>/state.json`` (format in docs/update-format.md §4.1).

Only facts that the ESP does not already hold live here: the security-epoch floor, the update that is
waiting to be proven (``pending``), the releases installed per slot, the last check and error, the
health-gate verdict per slot, and a short history. Which slot boots next, blessed or not, tries left —
all of that is read from the boot entries on the ESP (systemd's boot counting is the truth).

The file is replaced atomically on every change; an unreadable file is an error, never silently reset
(it holds the epoch floor, which must not fall back to 0).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from qx_common.errors import EnvironmentError_
from qx_common.fs import atomic_write

FORMAT = 1
HISTORY_MAX = 50


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class State:
    security_epoch_floor: int = 0
    host_id: str = ""
    last_check: dict[str, Any] | None = None     # {at, result: "up-to-date"|"available"|"error", version}
    last_error: dict[str, Any] | None = None     # {at, message}
    pending: dict[str, Any] | None = None        # {slot, version, security_epoch, from_slot, from_version, at}
    slots: dict[str, dict[str, Any]] = field(default_factory=dict)   # slot -> {version, security_epoch, at}
    gate: dict[str, dict[str, Any]] = field(default_factory=dict)    # slot -> {ok, reason, at, version}
    rollback: dict[str, Any] | None = None       # {from_version, from_slot, to_slot, reason, at}
    last_checkin: dict[str, Any] | None = None   # {at, event, ok, detail}
    # Releases this host rolled back from (their health gate failed): never offered again here until an
    # operator allows them (qx-update allow VERSION); a newer release is offered as usual.
    refused: dict[str, dict[str, Any]] = field(default_factory=dict)   # version -> {reason, at}
    history: list[dict[str, Any]] = field(default_factory=list)

    def event(self, kind: str, **fields: Any) -> None:
        self.history.append({"at": now_iso(), "event": kind, **fields})
        del self.history[:-HISTORY_MAX]

    def error(self, message: str) -> None:
        self.last_error = {"at": now_iso(), "message": message}


def load(path: Path) -> State:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return State()
    except (OSError, ValueError) as e:
        raise EnvironmentError_(f"{path}: the update state cannot be read: {e}",
                                hint="restore it from a backup, or remove it to start over "
                                     "(this resets the security-epoch floor to 0)") from e
    if raw.get("format") != FORMAT:
        raise EnvironmentError_(f"{path}: unknown state format {raw.get('format')!r}",
                                hint="this qx-update is older than the one that wrote the state")
    raw.pop("format")
    known = State.__dataclass_fields__
    return State(**{k: v for k, v in raw.items() if k in known})


def save(path: Path, st: State) -> None:
    atomic_write(path, json.dumps({"format": FORMAT, **asdict(st)}, indent=2, sort_keys=True) + "\n", mode=0o600)


def host_id(st: State, machine_id_file: Path) -> str:
    """The id that places this host in a staged rollout: /etc/machine-id, else a stored random id."""
    try:
        mid = machine_id_file.read_text().strip()
    except OSError:
        mid = ""
    if mid and mid != "uninitialized":
        return mid
    if not st.host_id:
        st.host_id = uuid.uuid4().hex
    return st.host_id
