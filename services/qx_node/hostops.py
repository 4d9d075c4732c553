"""Host-level policy and actions: capacity admission, overcommit settings, maintenance mode, power.

Invariants
----------
* Capacity: a VM is started (or created with ``start``) only when its memory fits —
  ``host memory - reserve - memory given to the running VMs`` (libvirt's node info and each running
  VM's current memory) — and new disks are created only when their full size fits in the pool's
  free space (thin qcow2 volumes could be overcommitted silently otherwise). A refusal is a 409
  naming the field, with what is needed and what is free. ``overcommit_memory`` /
  ``overcommit_disk`` (host settings) switch the respective check off.
* Maintenance mode: while on, nothing starts a VM (API start, create with start, clone with
  start, restart-on-crash); turning it on can shut down or stop the running VMs (a task). Reboot
  and shutdown of the host are refused while VMs run unless the host is in maintenance or the
  request says ``force``.
* Host settings (overcommit, reserve, maintenance) persist in ``<state_dir>/host-settings.json``
  (atomic writes), so maintenance mode survives a reboot of the host, as operators expect.
* Power: :class:`HostPower` is the boundary to the init system. :class:`SystemdPower` runs
  ``systemctl reboot|poweroff`` (through ``qx_common.run``); tests give the node an in-memory
  implementation. The action runs after the answer is sent (``POWER_DELAY``).
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from qx_common import log
from qx_common.fs import atomic_write
from qx_common.run import run
from qx_node.errors import Conflict, InvalidField, printable

_log = log.get("node.host")
MiB = 1024 * 1024
SETTINGS_NAME = "host-settings.json"
POWER_DELAY = 1.0  # seconds between the answer and the reboot/poweroff, so the client gets the answer


def default_reserve_mib(total_mib: int) -> int:
    """Memory kept for the host itself (qx-node, libvirtd, QEMU overhead, page cache): 5 %, at most 1 GiB."""
    return min(1024, total_mib // 20)


@dataclass(frozen=True)
class HostSettings:
    overcommit_memory: bool = False
    overcommit_disk: bool = False
    memory_reserve_mib: int | None = None  # None: default_reserve_mib(host memory)
    maintenance: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


SETTINGS_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "minProperties": 1,
    "properties": {
        "overcommit_memory": {"type": "boolean", "description": "start VMs even when their memory does not fit"},
        "overcommit_disk": {"type": "boolean", "description": "create disks even when their size does not fit"},
        "memory_reserve_mib": {"type": ["integer", "null"], "minimum": 0, "maximum": 1024 * 1024,
                               "description": "memory kept for the host (null: 5 %, at most 1024)"},
    },
}
MAINTENANCE_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["enabled"], "additionalProperties": False,
    "properties": {
        "enabled": {"type": "boolean"},
        "stop_vms": {"enum": ["none", "shutdown", "stop"], "default": "none",
                     "description": "entering: leave running VMs (none), ACPI-shutdown them, or power them off"},
    },
}
POWER_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    "properties": {"force": {"type": "boolean", "default": False,
                             "description": "even while VMs run outside maintenance mode"}},
}


def _keys(body: Any, allowed: set[str], field: str = "body") -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidField(f"{field}: must be a JSON object", field=field)
    for k in body:
        if k not in allowed:
            shown = printable(k) if k else '""'
            raise InvalidField(f"{shown}: unknown field", field=shown, hint="allowed: " + ", ".join(sorted(allowed)))
    return body


def _bool(d: dict[str, Any], key: str, default: bool) -> bool:
    v = d.get(key, default)
    if not isinstance(v, bool):
        raise InvalidField(f"{key}: must be true or false", field=key)
    return v


def parse_settings_edit(body: Any) -> dict[str, Any]:
    d = _keys(body, {"overcommit_memory", "overcommit_disk", "memory_reserve_mib"})
    if not d:
        raise InvalidField("body: names nothing to change", field="body",
                           hint="fields: memory_reserve_mib, overcommit_disk, overcommit_memory")
    out: dict[str, Any] = {}
    for k in ("overcommit_memory", "overcommit_disk"):
        if k in d:
            out[k] = _bool(d, k, False)
    if "memory_reserve_mib" in d:
        v = d["memory_reserve_mib"]
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 1024 * 1024):
            raise InvalidField("memory_reserve_mib: must be an integer from 0 to 1048576, or null", field="memory_reserve_mib")
        out["memory_reserve_mib"] = v
    return out


def parse_maintenance(body: Any) -> tuple[bool, str]:
    d = _keys(body, {"enabled", "stop_vms"})
    if "enabled" not in d:
        raise InvalidField("enabled: is required", field="enabled", hint='{"enabled": true}')
    enabled = _bool(d, "enabled", False)
    stop = d.get("stop_vms", "none")
    if stop not in ("none", "shutdown", "stop"):
        raise InvalidField("stop_vms: must be one of none, shutdown, stop", field="stop_vms")
    if stop != "none" and not enabled:
        raise InvalidField("stop_vms: only when entering maintenance (enabled true)", field="stop_vms")
    return enabled, stop


def parse_power(body: Any) -> bool:
    return _bool(_keys(body if body is not None else {}, {"force"}), "force", False)


class HostConfig:
    """The host settings, read once and rewritten atomically on each change."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / SETTINGS_NAME
        self._lock = threading.Lock()
        self.current = self._load()

    def _load(self) -> HostSettings:
        try:
            raw = json.loads(self.path.read_text())
            known = {k: raw[k] for k in HostSettings.__dataclass_fields__ if k in raw}
            return HostSettings(**known)
        except FileNotFoundError:
            return HostSettings()
        except (OSError, ValueError, TypeError) as e:
            # A damaged file must not keep qx-node from starting: the safe defaults apply, loudly.
            _log.error("host: %s is unreadable (%s); using the defaults", self.path, e)
            return HostSettings()

    def update(self, **changes: Any) -> HostSettings:
        with self._lock:
            new = replace(self.current, **changes)
            atomic_write(self.path, json.dumps(new.to_json(), indent=1, sort_keys=True) + "\n", mode=0o600)
            self.current = new
        return new


# -- capacity ----------------------------------------------------------------------------------
def memory_fit(total_mib: int, committed_mib: int, needed_mib: int, s: HostSettings, field: str) -> None:
    """Refuse (409) a VM start whose memory does not fit, unless overcommit_memory."""
    reserve = s.memory_reserve_mib if s.memory_reserve_mib is not None else default_reserve_mib(total_mib)
    free = total_mib - reserve - committed_mib
    if needed_mib <= free or s.overcommit_memory:
        return
    raise Conflict(f"{field}: the VM needs {needed_mib} MiB of memory but {max(free, 0)} MiB are free "
                   f"(host {total_mib} MiB, {reserve} reserved for the host, {committed_mib} given to running VMs)",
                   field=field, hint="stop another VM, give this one less memory, or allow overcommit: "
                                     'PATCH /v1/host/settings {"overcommit_memory": true}')


def disk_fit(available: int, needed: int, s: HostSettings, field: str) -> None:
    """Refuse (409) new disks whose full size does not fit in the pool, unless overcommit_disk."""
    if needed <= available or s.overcommit_disk:
        return
    raise Conflict(f"{field}: the disks need {needed // MiB} MiB but the pool has {max(available, 0) // MiB} MiB free",
                   field=field, hint="use smaller disks, free space in the pool, or allow thin-provisioning "
                                     'overcommit: PATCH /v1/host/settings {"overcommit_disk": true}')


# -- power -------------------------------------------------------------------------------------
class HostPower(Protocol):
    """The boundary to the init system (replaced by an in-memory implementation in tests)."""

    def reboot(self) -> None: ...

    def poweroff(self) -> None: ...


class SystemdPower:
    def reboot(self) -> None:
        run(["systemctl", "reboot"], timeout=30)

    def poweroff(self) -> None:
        run(["systemctl", "poweroff"], timeout=30)


def later(action: str, fn: Any) -> None:
    """Run the power action after POWER_DELAY on a thread (the HTTP answer goes out first)."""

    def go() -> None:
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - logged: the client was answered already
            _log.error("host: %s failed: %s", action, e)

    t = threading.Timer(POWER_DELAY, go)
    t.daemon = True
    t.start()
