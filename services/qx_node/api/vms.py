"""Routes: /v1/vms — create, list, inspect, power actions, stats, console, delete."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from qx_node.api.errors import json_body
from qx_node.node import Node
from qx_node.errors import Conflict
from qx_node.vmspec import VM_SPEC_SCHEMA, parse_vm_spec

router = APIRouter(prefix="/v1/vms", tags=["vms"])


def _node(request: Request) -> Node:
    return request.app.state.node  # type: ignore[no-any-return]


@router.get("", summary="List VMs")
def list_vms(request: Request) -> list[dict[str, Any]]:
    return _node(request).vms.list()


@router.post("", status_code=201, summary="Create (and by default start) a VM from a spec",
             openapi_extra={"requestBody": {"required": True,
                                            "content": {"application/json": {"schema": VM_SPEC_SCHEMA}}}})
async def create_vm(request: Request) -> JSONResponse:
    spec = parse_vm_spec(await json_body(request))
    vm = await run_in_threadpool(_node(request).vms.create, spec)
    return JSONResponse(vm, status_code=201, headers={"Location": f"/v1/vms/{spec.name}"})


@router.get("/{name}", summary="One VM")
def get_vm(request: Request, name: str) -> dict[str, Any]:
    return _node(request).vms.get(name)


@router.delete("/{name}", summary="Delete a VM (disks are kept unless remove_disks=true)")
def delete_vm(request: Request, name: str, remove_disks: bool = Query(False),
              force: bool = Query(False, description="power off a running VM first")) -> dict[str, Any]:
    return _node(request).vms.delete(name, remove_disks=remove_disks, force=force)


@router.post("/{name}/start", summary="Start")
def start_vm(request: Request, name: str) -> dict[str, Any]:
    return _node(request).vms.action(name, "start")


@router.post("/{name}/shutdown", summary="ACPI shutdown (the guest decides)")
def shutdown_vm(request: Request, name: str) -> dict[str, Any]:
    return _node(request).vms.action(name, "shutdown")


@router.post("/{name}/stop", summary="Power off at once")
def stop_vm(request: Request, name: str) -> dict[str, Any]:
    return _node(request).vms.action(name, "stop")


@router.post("/{name}/reboot", summary="ACPI reboot")
def reboot_vm(request: Request, name: str) -> dict[str, Any]:
    return _node(request).vms.action(name, "reboot")


@router.get("/{name}/stats", summary="CPU, memory, disk and NIC counters; cpu_percent since the last call")
def vm_stats(request: Request, name: str) -> dict[str, Any]:
    return _node(request).vms.stats(name)


@router.get("/{name}/console", summary="Address of the VM's VNC console (loopback on the host)")
def vm_console(request: Request, name: str) -> dict[str, Any]:
    vm = _node(request).vms.get(name)
    if vm["console"] is None:
        raise Conflict(f"VM '{name}' has no console now (state {vm['state']})", hint="start the VM first")
    return vm["console"]  # type: ignore[no-any-return]
