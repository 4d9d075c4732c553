"""The OpenAPI document as the API really behaves (``GET /openapi.json``).

FastAPI's generated document is completed here: the bearer security scheme (required everywhere
but ``GET /health``), the real error body ``{"error", "field", "hint"}`` (``Error``) for every
error status a route can answer instead of FastAPI's validation shape, the response schema of every
JSON answer (``_SUCCESS``, and ``_WAIT_201`` for the long operations' ``wait=true`` answer; a route
missing there fails tests/node/test_openapi.py, whose fuzz run validates every answer against the
document) and the media type of the two answers that are not JSON
(``/metrics``, ``/v1/events``). Path parameter patterns come from the routes (``Path(pattern=...)``),
request body schemas from the parsers' modules (``VM_SPEC_SCHEMA``...).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["error", "field", "hint"], "additionalProperties": False,
    "properties": {
        "error": {"type": "string", "description": "what went wrong, naming the field"},
        "field": {"type": ["string", "null"], "description": "the part of the request at fault"},
        "hint": {"type": ["string", "null"], "description": "how to fix it"},
    },
}
_STATUS_TEXT = {
    "401": "missing or wrong API token",
    "404": "the VM, volume, snapshot or task does not exist",
    "409": "exists already, or the current state forbids it",
    "413": "the body is too large (JSON bodies: 1 MiB), or the upload does not fit",
    "422": "a parameter or body field is invalid (named in field)",
    "423": "the host is in lockdown mode: its configuration cannot be changed through the API",
    "502": "libvirt failed",
    "503": "libvirtd is not reachable; qx-node reconnects by itself",
}

_OBJ = {"type": "object"}
VM_SUMMARY = {"type": "object", "required": ["name", "uuid", "state", "vcpus", "memory_mib", "autostart"],
              "properties": {"name": {"type": "string"}, "uuid": {"type": "string"},
                             "state": {"enum": ["nostate", "running", "blocked", "paused", "shutdown", "shutoff",
                                                "crashed", "pmsuspended", "unknown"]},
                             "vcpus": {"type": "integer"}, "memory_mib": {"type": "integer"},
                             "autostart": {"type": "boolean"}, "persistent": {"type": "boolean"}}}
VM = {"allOf": [{"$ref": "#/components/schemas/VmSummary"}, {"type": "object", "properties": {
    "restart_on_crash": {"type": "boolean"}, "firmware": {"enum": ["bios", "uefi"]},
    "disks": {"type": "array", "items": {"type": "string"}}, "cdroms": {"type": "array", "items": {"type": "string"}},
    "disk_devices": {"type": "array", "description": "the disks with their device names (what a disk's removal takes)",
                     "items": {"type": "object", "required": ["dev", "path", "bus", "removed_at_next_start"],
                               "properties": {"dev": {"type": "string"}, "path": {"type": "string"},
                                              "bus": {"type": "string"}, "removed_at_next_start": {
                                                  "type": "boolean", "description": "the running VM still has it; "
                                                  "its saved definition no longer does"}}}},
    "nics": {"type": "array", "items": _OBJ}, "console": {"type": ["object", "null"]},
    "description": {"type": ["string", "null"]}, "tags": {"type": "array", "items": {"type": "string"}},
    "pending": {"type": "object", "description": "saved changes the running VM gets at its next start"},
    "device": {"type": "string", "description": "(device changes) the disk's device name or the NIC's MAC"},
    "busy": {"type": ["string", "null"], "description": "why a task holds the VM now (a clone), else null"},
    "applied": {"type": "object", "description": "(PATCH, device changes) per field: now | next_start",
                "additionalProperties": {"enum": ["now", "next_start"]}}}}]}
VOLUME = {"type": "object", "required": ["name", "path", "format", "capacity", "allocation"],
          "properties": {"name": {"type": "string"}, "path": {"type": "string"}, "format": {"type": "string"},
                         "capacity": {"type": "integer"}, "allocation": {"type": "integer"}}}
SNAPSHOT = {"type": "object", "required": ["name", "memory", "parent"], "properties": {
    "name": {"type": "string"}, "description": {"type": ["string", "null"]}, "created": {"type": ["integer", "null"]},
    "state": {"type": ["string", "null"]}, "memory": {"type": "boolean"}, "parent": {"type": ["string", "null"]},
    "current": {"type": "boolean"}, "children": {"type": "array"}}}
TICKET = {"type": "object", "required": ["vm", "kind", "ticket", "expires_in", "url"], "properties": {
    "vm": {"type": "string"}, "kind": {"enum": ["vnc", "serial"]}, "ticket": {"type": "string"},
    "expires_in": {"type": "number", "description": "seconds; the ticket is used up by the handshake"},
    "url": {"type": "string", "description": "the WebSocket to open (wss://...) with the ticket"}}}
TASK = {"type": "object", "required": ["id", "kind", "target", "state", "progress", "url"], "properties": {
    "id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
    "kind": {"enum": ["create", "clone", "snapshot", "upload", "maintenance", "update"]},
    "target": {"type": "string", "description": "the VM or volume it works on"},
    "state": {"enum": ["running", "succeeded", "failed", "cancelled"]},
    "progress": {"type": "number", "minimum": 0, "maximum": 100}, "message": {"type": "string"},
    "cancellable": {"type": "boolean"}, "cancel_requested": {"type": "boolean"},
    "created": {"type": "number"}, "finished": {"type": ["number", "null"]},
    "result": {"type": ["object", "null"], "description": "what the synchronous call would have answered"},
    "error": {"type": ["object", "null"], "description": "{status, error, field, hint} when failed or cancelled"},
    "url": {"type": "string"}}}
HOST_SETTINGS = {"type": "object", "required": ["overcommit_memory", "overcommit_disk", "memory_reserve_mib",
                                                "maintenance"], "properties": {
    "overcommit_memory": {"type": "boolean"}, "overcommit_disk": {"type": "boolean"},
    "memory_reserve_mib": {"type": ["integer", "null"]}, "maintenance": {"type": "boolean"}}}
NETWORK = {"type": "object", "required": ["name", "forward", "bridge", "interface", "active"], "properties": {
    "name": {"type": "string"}, "uuid": {"type": "string"}, "forward": {"type": "string"},
    "bridge": {"type": ["string", "null"]}, "interface": {"type": ["string", "null"]},
    "active": {"type": "boolean"}, "autostart": {"type": "boolean"},
    "vlan": {"type": ["integer", "null"], "description": "the management adapter's VLAN it carries (bridge qxbrN)"}}}
NETWORKS = {"type": "object", "required": ["host", "networks"], "properties": {
    "host": {"type": "array", "items": {"type": "object", "required": ["name", "kind"], "properties": {
        "name": {"type": "string"}, "kind": {"enum": ["bridge", "vlan"]}, "mac": {"type": "string"},
        "up": {"type": "boolean"}, "ports": {"type": "array", "items": {"type": "string"}},
        "vlan_id": {"type": ["integer", "null"]}, "parent": {"type": ["string", "null"]}}}},
    "networks": {"type": "array", "items": {"$ref": "#/components/schemas/Network"}}}}
CAPACITY = {"type": "object", "required": ["memory", "disk", "maintenance"], "properties": {
    "memory": {"type": "object", "required": ["total_mib", "committed_mib", "reserve_mib", "free_mib", "overcommit"],
               "properties": {"total_mib": {"type": "integer"}, "committed_mib": {"type": "integer"},
                              "reserve_mib": {"type": "integer"}, "free_mib": {"type": "integer"},
                              "overcommit": {"type": "boolean"}}},
    "disk": {"type": "object", "required": ["capacity", "available", "overcommit"],
             "properties": {"capacity": {"type": "integer"}, "available": {"type": "integer"},
                            "overcommit": {"type": "boolean"}}},
    "maintenance": {"type": "boolean"}}}
POWER = {"type": "object", "required": ["action", "in_seconds"], "properties": {
    "action": {"enum": ["reboot", "shutdown"]}, "in_seconds": {"type": "number"}}}
HEALTH = {"type": "object", "required": ["status", "version", "components"], "properties": {
    "status": {"enum": ["ok", "degraded"]}, "version": {"type": "string"},
    "components": {"type": "object", "additionalProperties": {
        "type": "object", "required": ["ok", "detail"],
        "properties": {"ok": {"type": "boolean"}, "detail": {"type": "string"}}}}}}

_INT, _STR, _BOOL, _NUM = {"type": "integer"}, {"type": "string"}, {"type": "boolean"}, {"type": "number"}
_STRS = {"type": "array", "items": _STR}


def _object(required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    """An object with these required and optional properties (more may come in later versions)."""
    return {"type": "object", "required": sorted(required), "properties": {**required, **(optional or {})}}


HOST = _object({"hostname": _STR, "version": _STR, "slot": {"enum": ["a", "b", None]}, "kernel": _STR, "arch": _STR,
                "cpu_model": _STR, "cpu_cores": {"type": ["integer", "null"]},
                "cpu_threads": {"type": ["integer", "null"]}, "memory_bytes": _INT, "boot_time": _NUM,
                "uptime_s": _NUM, "libvirt": {"type": ["string", "null"]},
                "kvm": _object({"usable": _BOOL, "reason": _STR}), "virtualization": {"enum": ["kvm", "tcg"]}})
HOST_STATS = _object(
    {"window_s": _NUM, "cpu_percent": _NUM, "load": {"type": "array", "items": _NUM},
     "memory": _object({"total_bytes": _INT, "available_bytes": _INT, "used_percent": _NUM})},
    {"disk": _object({"read_bytes_per_s": _INT, "write_bytes_per_s": _INT}),
     "net": _object({"rx_bytes_per_s": _INT, "tx_bytes_per_s": _INT})})
_PARTITION = _object({"name": _STR, "path": _STR, "number": {"type": ["integer", "null"]}, "size_bytes": _INT,
                      "fs_type": _STR, "label": _STR, "partlabel": _STR, "by_id": _STRS})
HARDWARE = _object({
    "disks": {"type": "array", "items": _object(
        {"name": _STR, "path": _STR, "by_id": _STRS, "size_bytes": _INT, "model": _STR, "serial": _STR,
         "rotational": _BOOL, "partitions": {"type": "array", "items": _PARTITION}},
        {"removable": _BOOL, "bus": _STR, "wwn": _STR})},
    "nics": {"type": "array", "items": _object(
        {"name": _STR, "mac": _STR, "ipv4": _STRS, "ipv6": _STRS, "state": _STR, "mtu": _INT,
         "speed_mbps": {"type": ["integer", "null"]}, "physical": _BOOL, "bridge": _BOOL, "driver": _STR})},
    "pci": {"type": "array", "items": _object(
        {"address": _STR, "vendor_id": _STR, "device_id": _STR, "class": _STR, "vendor": _STR, "device": _STR,
         "driver": {"type": ["string", "null"]}, "iommu_group": {"type": ["integer", "null"]}})},
    "iommu": _BOOL})
VM_STATS = _object(
    {"name": _STR, "state": _STR, "vcpus": _INT, "cpu_time_ns": _INT, "memory_max_bytes": _INT, "memory_bytes": _INT,
     "cpu_percent": {"type": ["number", "null"], "description": "since the previous stats call; null on the first"},
     "memory": {"type": "object", "additionalProperties": _INT, "description": "libvirt's memory stats, bytes"},
     "disks": {"type": "array", "items": _object({"path": _STR, "read_bytes": _INT, "write_bytes": _INT,
                                                  "read_requests": _INT, "write_requests": _INT})},
     "interfaces": {"type": "array", "items": _object({"device": _STR, "rx_bytes": _INT, "rx_packets": _INT,
                                                       "tx_bytes": _INT, "tx_packets": _INT})}})
VM_CONSOLE = _object({"type": {"const": "vnc"}, "host": _STR, "port": _INT})
VM_DELETED = _object({"name": _STR, "deleted": {"const": True}, "removed_volumes": _STRS,
                      "kept_outside_pool": _STRS})
SNAPSHOT_NODE = {"allOf": [{"$ref": "#/components/schemas/Snapshot"}, {"type": "object", "properties": {
    "children": {"type": "array", "items": {"$ref": "#/components/schemas/SnapshotNode"}}}}]}
SNAPSHOT_TREE = _object({"vm": _STR, "current": {"type": ["string", "null"]}, "count": _INT,
                         "snapshots": {"type": "array", "items": {"$ref": "#/components/schemas/SnapshotNode"}}})
SNAPSHOT_REVERTED = _object({"vm": _STR, "snapshot": _STR, "reverted": {"const": True}, "state": _STR})
SNAPSHOT_DELETED = _object({"vm": _STR, "snapshot": _STR, "deleted": {"const": True}})
POOL = _object({"name": _STR, "path": _STR, "capacity": _INT, "allocation": _INT, "available": _INT})
VOLUME_DELETED = _object({"name": _STR, "deleted": {"const": True}})
HOST_SERVICES = _object({
    "available": _BOOL, "reason": {"type": ["string", "null"], "description": "why systemd could not tell"},
    "services": {"type": "array", "items": _object(
        {"unit": _STR, "purpose": _STR,
         "state": {"enum": ["active", "reloading", "inactive", "failed", "activating", "deactivating", "maintenance",
                            "refreshing", "unknown"]},
         "sub_state": {"type": ["string", "null"]}, "enabled": {"type": ["string", "null"]},
         "since": {"type": ["string", "null"]}, "main_pid": {"type": ["integer", "null"]},
         "result": {"type": ["string", "null"]}})}})
CERTIFICATE = _object({"sha256": {"type": ["string", "null"], "pattern": "^([0-9A-F]{2}:){31}[0-9A-F]{2}$",
                                  "description": "SHA-256 of the DER certificate, as browsers show it"},
                       "path": _STR, "reason": {"type": ["string", "null"]}})

# The host's updates: qx-update's own models (qx_update.api), as its --json prints them.
_STR_NULL, _INT_NULL = {"type": ["string", "null"]}, {"type": ["integer", "null"]}


def _null(schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """``schema`` (an object) or null."""
    return {**schema, "type": ["object", "null"], **extra}


_UPDATE_STATES = ["no-trusted-root", "rolled-back", "reboot-pending", "on-trial", "update-available", "check-failed",
                  "up-to-date", "not-checked"]
_RELEASE = _object({"version": _STR, "security_epoch": _INT, "slot_size": _INT, "download_size": _INT, "notes": _STR})
_SKIPPED = {"type": "array", "items": _object({"version": _STR, "reason": _STR})}
_ROLLBACK_RECORD = _object({"from_version": _STR, "from_slot": _STR, "to_slot": _STR, "reason": _STR},
                           {"at": _STR_NULL, "detected_at": _STR_NULL})
UPDATE_STATUS = _object({
    "schema_version": _INT, "state": {"enum": _UPDATE_STATES}, "message": _STR, "channel": _STR, "server_url": _STR,
    "running_slot": _STR, "running_version": _STR, "default_slot": _STR_NULL, "security_epoch_floor": _INT,
    "maintenance_window": _STR, "trusted_root": _BOOL, "esp_error": _STR_NULL,
    "last_check": _null(_object({"at": _STR, "result": {"enum": ["up-to-date", "available", "error"]}},
                                {"version": _STR_NULL, "error": _STR_NULL})),
    "last_error": _null(_object({"at": _STR, "message": _STR})),
    "last_checkin": _null(_object({"at": _STR, "event": _STR, "ok": _BOOL, "detail": _STR})),
    "pending": _null(_object({"slot": _STR, "version": _STR, "security_epoch": _INT_NULL, "from_slot": _STR,
                              "from_version": _STR, "at": _STR})),
    "rollback": _null(_ROLLBACK_RECORD, description="the last rollback (an operator's, or the boot counter's) and why"),
    "refused": {"type": "object", "additionalProperties": _object(
        {"reason": _STR, "at": _STR}, {"cause": {"enum": ["rolled-back", "secure-boot"]}})},
    "slots": {"type": "object", "additionalProperties": _object(
        {"device": _STR, "version": _STR_NULL, "active": _BOOL, "next_boot": _BOOL, "blessed": _BOOL, "bad": _BOOL,
         "tries_left": _INT_NULL, "tries_done": _INT_NULL, "entry": _STR_NULL, "security_epoch": _INT_NULL})},
    "available": {"type": ["string", "null"], "description": "the version the last check found, not installed yet"},
    "awaiting_reboot": {"type": ["string", "null"],
                        "description": "installed in the other slot; the next boot starts it"},
    "applying": {"type": "boolean", "description": "an apply started through this node is running"}})
UPDATE_CHECK = _object({"schema_version": _INT, "running_version": _STR, "channel": _STR,
                        "available": _null(_RELEASE), "installed": _BOOL, "skipped": _SKIPPED,
                        "metadata_refresh_s": _NUM, "message": _STR})
UPDATE_ROLLBACK = _object({"schema_version": _INT, "rolled_back": _BOOL, "cancelled": _STR_NULL,
                           "from_version": _STR_NULL, "to_version": _STR_NULL, "next_boot": _STR_NULL, "message": _STR},
                          {"reboot": _STR_NULL})
UPDATE_CHANNEL = _object({"schema_version": _INT, "channel": _STR, "file": _STR_NULL})
HISTORY = _object({"interval_s": _NUM, "span_s": _NUM, "count": _INT,
                   **{c: {"type": "array", "items": _NUM} for c in ("t", "cpu", "mem", "disk", "net", "load")}})

_REF = "#/components/schemas/"
# (method, path) -> (status, schema) of the success answer.
_SUCCESS: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {
    ("get", "/v1/vms"): ("200", {"type": "array", "items": {"$ref": _REF + "VmSummary"}}),
    ("post", "/v1/vms"): ("202", {"$ref": _REF + "Task"}),
    ("get", "/v1/vms/{name}"): ("200", {"$ref": _REF + "Vm"}),
    ("patch", "/v1/vms/{name}"): ("200", {"$ref": _REF + "Vm"}),
    ("get", "/v1/storage/volumes"): ("200", {"type": "array", "items": {"$ref": _REF + "Volume"}}),
    ("post", "/v1/storage/volumes"): ("201", {"$ref": _REF + "Volume"}),
    ("get", "/v1/storage/volumes/{name}"): ("200", {"$ref": _REF + "Volume"}),
    ("put", "/v1/storage/isos/{name}"): ("201", {"$ref": _REF + "Volume"}),
    ("post", "/v1/vms/{name}/snapshots"): ("202", {"$ref": _REF + "Task"}),
    ("get", "/v1/vms/{name}/snapshots/{snapshot}"): ("200", {"$ref": _REF + "Snapshot"}),
    ("get", "/health"): ("200", {"$ref": _REF + "Health"}),
    ("post", "/v1/vms/{name}/console"): ("201", {"$ref": _REF + "ConsoleTicket"}),
    ("post", "/v1/vms/{name}/disks"): ("200", {"$ref": _REF + "Vm"}),
    ("delete", "/v1/vms/{name}/disks/{dev}"): ("200", {"$ref": _REF + "Vm"}),
    ("post", "/v1/vms/{name}/nics"): ("200", {"$ref": _REF + "Vm"}),
    ("delete", "/v1/vms/{name}/nics/{mac}"): ("200", {"$ref": _REF + "Vm"}),
    ("put", "/v1/vms/{name}/cdrom"): ("200", {"$ref": _REF + "Vm"}),
    ("delete", "/v1/vms/{name}/cdrom"): ("200", {"$ref": _REF + "Vm"}),
    ("get", "/v1/networks"): ("200", NETWORKS),
    ("delete", "/v1/networks/{name}"): ("200", {"type": "object", "required": ["name", "deleted"], "properties": {
        "name": {"type": "string"}, "deleted": {"const": True}}}),
    ("get", "/v1/host/capacity"): ("200", CAPACITY),
    ("post", "/v1/host/maintenance"): ("200", {"type": "object", "required": ["maintenance"],
                                               "properties": {"maintenance": {"type": "boolean"}}}),
    ("post", "/v1/host/reboot"): ("202", POWER),
    ("post", "/v1/host/shutdown"): ("202", POWER),
    ("post", "/v1/networks"): ("201", {"$ref": _REF + "Network"}),
    ("get", "/v1/networks/{name}"): ("200", {"$ref": _REF + "Network"}),
    ("get", "/v1/tasks"): ("200", {"type": "array", "items": {"$ref": _REF + "Task"}}),
    ("get", "/v1/tasks/{id}"): ("200", {"$ref": _REF + "Task"}),
    ("post", "/v1/tasks/{id}/cancel"): ("202", {"$ref": _REF + "Task"}),
    ("post", "/v1/vms/{name}/clone"): ("202", {"$ref": _REF + "Task"}),
    ("get", "/v1/host/settings"): ("200", {"$ref": _REF + "HostSettings"}),
    ("patch", "/v1/host/settings"): ("200", {"$ref": _REF + "HostSettings"}),
    ("get", "/v1/host/maintenance"): ("200", {"type": "object", "required": ["maintenance"],
                                              "properties": {"maintenance": {"type": "boolean"}}}),
    ("get", "/v1/host"): ("200", HOST),
    ("get", "/v1/host/stats"): ("200", HOST_STATS),
    ("get", "/v1/host/metrics/history"): ("200", HISTORY),
    ("get", "/v1/host/updates"): ("200", UPDATE_STATUS),
    ("post", "/v1/host/updates/check"): ("200", UPDATE_CHECK),
    ("post", "/v1/host/updates/apply"): ("202", {"$ref": _REF + "Task"}),
    ("post", "/v1/host/updates/rollback"): ("200", UPDATE_ROLLBACK),
    ("put", "/v1/host/updates/channel"): ("200", UPDATE_CHANNEL),
    ("get", "/v1/hardware"): ("200", HARDWARE),
    ("get", "/v1/host/services"): ("200", HOST_SERVICES),
    ("get", "/v1/host/certificate"): ("200", CERTIFICATE),
    ("get", "/v1/host/journal"): ("200", _object({
        "available": _BOOL, "reason": {"type": ["string", "null"]}, "truncated": _BOOL,
        "entries": {"type": "array", "items": _object(
            {"time": {"type": ["string", "null"]}, "priority": {"type": ["integer", "null"]},
             "unit": {"type": ["string", "null"]}, "identifier": {"type": ["string", "null"]},
             "pid": {"type": ["integer", "null"]}, "message": _STR, "message_cut": _BOOL})}})),
    ("post", "/v1/host/api-token/rotate"): ("200", _object(
        {"token": {"type": "string", "minLength": 32, "description": "the new token; shown once, not kept"},
         "ended_sessions": _INT})),
    ("delete", "/v1/vms/{name}"): ("200", VM_DELETED),
    ("get", "/v1/vms/{name}/stats"): ("200", VM_STATS),
    ("get", "/v1/vms/{name}/console"): ("200", VM_CONSOLE),
    ("get", "/v1/vms/{name}/snapshots"): ("200", {"$ref": _REF + "SnapshotTree"}),
    ("post", "/v1/vms/{name}/snapshots/{snapshot}/revert"): ("200", SNAPSHOT_REVERTED),
    ("delete", "/v1/vms/{name}/snapshots/{snapshot}"): ("200", SNAPSHOT_DELETED),
    ("get", "/v1/storage/pool"): ("200", POOL),
    ("delete", "/v1/storage/volumes/{name}"): ("200", VOLUME_DELETED),
}
# Answers that are not JSON: their media type and a string schema.
_TEXT = {("get", "/metrics"): ("text/plain", "Prometheus text exposition format 0.0.4"),
         ("get", "/v1/events"): ("text/event-stream", "server-sent events, one JSON object per 'data:' line")}
# Reads that answer 409 when the object's state has no such thing (a shut-off VM has no console).
_GET_CONFLICT = {("get", "/v1/vms/{name}/console")}
# Routes that can also answer 202 with a task (maintenance with stop_vms).
_TASK_202 = {("post", "/v1/host/maintenance")}
# The long operations (qx_node.api.longops): 202 with the task by default, 201 with this result when
# asked to wait (wait=true).
_WAIT_201 = {("post", "/v1/vms"): {"$ref": _REF + "Vm"}, ("post", "/v1/vms/{name}/clone"): {"$ref": _REF + "Vm"},
             ("post", "/v1/vms/{name}/snapshots"): {"$ref": _REF + "Snapshot"}}
for _a in ("start", "shutdown", "stop", "reboot", "pause", "resume"):
    _SUCCESS[("post", f"/v1/vms/{{name}}/{_a}")] = ("200", {"$ref": _REF + "VmSummary"})


def _error(status: str) -> dict[str, Any]:
    return {"description": _STATUS_TEXT.get(status, "error"),
            "content": {"application/json": {"schema": {"$ref": _REF + "Error"}}}}


def complete(doc: dict[str, Any]) -> dict[str, Any]:
    comps = doc.setdefault("components", {})
    schemas = comps.setdefault("schemas", {})
    for fastapi_shape in ("HTTPValidationError", "ValidationError"):
        schemas.pop(fastapi_shape, None)
    schemas.update(Error=ERROR_SCHEMA, VmSummary=VM_SUMMARY, Vm=VM, Volume=VOLUME, Snapshot=SNAPSHOT, Health=HEALTH,
                   ConsoleTicket=TICKET, Task=TASK, HostSettings=HOST_SETTINGS, Network=NETWORK,
                   SnapshotNode=SNAPSHOT_NODE, SnapshotTree=SNAPSHOT_TREE)
    comps["securitySchemes"] = {"bearerAuth": {
        "type": "http", "scheme": "bearer",
        "description": "the token in the node's api-token file (/var/lib/quantix/node/api-token)"}}
    doc["security"] = [{"bearerAuth": []}]
    for path, ops in doc.get("paths", {}).items():
        for method, op in ops.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            responses: dict[str, Any] = op["responses"]
            ok = _SUCCESS.get((method, path))
            if ok is not None:
                status, schema = ok
                entry = responses.setdefault(status, {"description": "success"})
                entry["content"] = {"application/json": {"schema": schema}}
            text = _TEXT.get((method, path))
            if text is not None:
                responses.setdefault("200", {"description": "success"})["content"] = {
                    text[0]: {"schema": {"type": "string", "description": text[1]}}}
            waited = _WAIT_201.get((method, path))
            if waited is not None:
                responses["201"] = {"description": "wait=true: the task succeeded, this is its result (Location: "
                                                   "the new object; X-Qx-Task: the task)",
                                    "content": {"application/json": {"schema": waited}}}
            if (method, path) in _TASK_202:
                responses["202"] = {"description": "accepted: the task (its URL also in Location)",
                                    "content": {"application/json": {"schema": {"$ref": _REF + "Task"}}}}
            if path == "/health":
                op["security"] = []  # public
                responses["503"] = {"description": "a component is not ok (same body)",
                                    "content": {"application/json": {"schema": {"$ref": _REF + "Health"}}}}
                responses["422"] = _error("422")  # an unknown query parameter, as on every route
                continue
            codes = {"401", "422"}
            if "{" in path:
                codes.add("404")
            if path.startswith(("/v1/vms", "/v1/storage", "/v1/events", "/v1/host/", "/v1/networks")):
                codes |= {"502", "503"}
            if method in ("post", "put", "patch", "delete") and path.startswith(
                    ("/v1/vms", "/v1/storage", "/v1/tasks", "/v1/host/", "/v1/networks")) \
                    or (method, path) in _GET_CONFLICT:
                codes.add("409")
            if method in ("post", "put", "patch", "delete") and path.startswith("/v1/host/") \
                    or (method, path) in (("post", "/v1/networks"), ("delete", "/v1/networks/{name}")):
                codes.add("423")  # qx_node.lockdown guards every change of the host (VLAN networks too)
            if "requestBody" in op:
                codes.add("413")
            for code in sorted(codes):
                responses[code] = _error(code)
    return doc


def install(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
