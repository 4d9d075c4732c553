"""Routes: host control — settings (overcommit, memory reserve), capacity, maintenance mode,
reboot and shutdown. All behind the token like every route; policy in :mod:`qx_node.hostops`."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from qx_common import log
from qx_node import hostops
from qx_node.api.errors import SafeJSONResponse, json_body
from qx_node.errors import Conflict
from qx_node.lockdown import refuse_changes_while_locked
from qx_node.node import Node
from qx_node.tasks import Task

# Lockdown mode: every change of the host refused (423) while the console has it on; reads still work.
router = APIRouter(prefix="/v1/host", tags=["host"], dependencies=[Depends(refuse_changes_while_locked)])
_log = log.get("node.host")
SHUTDOWN_WAIT = 120.0  # seconds maintenance waits for guests to power off after an ACPI shutdown


def _node(request: Request) -> Node:
    return request.app.state.node  # type: ignore[no-any-return]


def _body(schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"requestBody": {"required": required, "content": {"application/json": {"schema": schema}}}}


@router.get("/settings", summary="Host settings: overcommit of memory and disk, memory reserve, maintenance")
def get_settings(request: Request) -> dict[str, Any]:
    return _node(request).config.current.to_json()


@router.patch("/settings", summary="Change host settings (kept across restarts)",
              openapi_extra=_body(hostops.SETTINGS_SCHEMA))
async def patch_settings(request: Request) -> dict[str, Any]:
    changes = hostops.parse_settings_edit(await json_body(request))
    return (await run_in_threadpool(lambda: _node(request).config.update(**changes))).to_json()


@router.get("/capacity", summary="Memory (MiB) and pool space (bytes): total, given to running VMs, free")
def get_capacity(request: Request) -> dict[str, Any]:
    node = _node(request)
    s = node.config.current
    mem = node.vms.memory_use()
    reserve = s.memory_reserve_mib if s.memory_reserve_mib is not None else hostops.default_reserve_mib(mem["total_mib"])
    pool = node.storage.pool_info()
    return {"memory": {**mem, "reserve_mib": reserve, "free_mib": mem["total_mib"] - reserve - mem["committed_mib"],
                       "overcommit": s.overcommit_memory},
            "disk": {"capacity": pool["capacity"], "available": pool["available"], "overcommit": s.overcommit_disk},
            "maintenance": s.maintenance}


def _stop_all(node: Node, how: str, task: Task) -> dict[str, Any]:
    """Shut down (ACPI, waiting up to SHUTDOWN_WAIT s) or stop every running VM."""
    running = [v["name"] for v in node.vms.list() if v["state"] in ("running", "paused", "blocked")]
    failed: dict[str, str] = {}
    for i, name in enumerate(running):
        task.progress(i / (2 * len(running)), f"{how} {name}")
        try:
            node.vms.action(name, how)
        except Conflict:
            pass  # stopped meanwhile
        except Exception as e:  # noqa: BLE001 - reported per VM in the result, the others go on
            failed[name] = str(e)
    deadline = time.monotonic() + (SHUTDOWN_WAIT if how == "shutdown" else 10.0)
    left = list(running)
    while left and time.monotonic() < deadline:
        left = [v["name"] for v in node.vms.list() if v["name"] in left and v["state"] != "shutoff"]
        task.progress(0.5 + 0.5 * (len(running) - len(left)) / max(len(running), 1),
                      f"{len(running) - len(left)} of {len(running)} VMs off")
        if left:
            time.sleep(0.5)
    return {"maintenance": True, "stopped": sorted(set(running) - set(left)), "still_running": sorted(left),
            "failed": failed}


@router.get("/maintenance", summary="Whether the host is in maintenance mode (no VM may start)")
def get_maintenance(request: Request) -> dict[str, Any]:
    return {"maintenance": _node(request).config.current.maintenance}


@router.post("/maintenance", summary="Enter or leave maintenance mode; entering can shut down or stop the "
                                     "running VMs (then 202 with the task)",
             openapi_extra=_body(hostops.MAINTENANCE_SCHEMA), response_model=None)
async def set_maintenance(request: Request) -> JSONResponse:
    enabled, stop = hostops.parse_maintenance(await json_body(request))
    node = _node(request)
    before = node.config.current.maintenance
    # On before the VMs are stopped, so that none starts again meanwhile.
    await run_in_threadpool(lambda: node.config.update(maintenance=enabled))
    task = None
    if stop != "none":
        try:
            task = node.tasks.start("maintenance", node.settings.host, lambda t: _stop_all(node, stop, t))
        except Conflict:  # too many tasks: nothing changed
            await run_in_threadpool(lambda: node.config.update(maintenance=before))
            raise
    _log.warning("host: maintenance mode %s", "on" if enabled else "off")
    node.bus.publish({"type": "maintenance", "maintenance": enabled})
    if task is not None:
        return SafeJSONResponse(task.to_json(), status_code=202, headers={"Location": task.url})
    return SafeJSONResponse({"maintenance": enabled})


def _power(action: str):  # type: ignore[no-untyped-def]
    async def route(request: Request) -> JSONResponse:
        raw = await request.body()
        force = hostops.parse_power(await json_body(request) if raw.strip() else None)
        node = _node(request)
        if not node.config.current.maintenance and not force:
            running = [v["name"] for v in await run_in_threadpool(node.vms.list)
                       if v["state"] in ("running", "paused", "blocked")]
            if running:
                raise Conflict(f"VM(s) {', '.join(running)} are running", field="force",
                               hint='enter maintenance mode first (POST /v1/host/maintenance {"enabled": true, '
                                    '"stop_vms": "shutdown"}), or pass {"force": true}')
        fn = node.power.reboot if action == "reboot" else node.power.poweroff
        _log.warning("host: %s requested through the API", action)
        node.bus.publish({"type": "host", "action": action})
        hostops.later(action, fn)
        return SafeJSONResponse({"action": action, "in_seconds": hostops.POWER_DELAY}, status_code=202)

    route.__name__ = f"host_{action}"
    return route


for _action, _summary in (("reboot", "Reboot the host"), ("shutdown", "Power the host off")):
    router.add_api_route(f"/{_action}", _power(_action), methods=["POST"], status_code=202, response_model=None,
                         summary=f"{_summary} (202; it happens a second later). Refused (409) while VMs run, "
                                 "unless in maintenance mode or force",
                         openapi_extra=_body(hostops.POWER_SCHEMA, required=False))
