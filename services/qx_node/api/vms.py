"""Routes: /v1/vms — create, list, inspect, edit, power actions (with pause/resume), snapshots, stats,
console, delete. Create, clone and snapshot are long operations: they answer as
:mod:`qx_node.api.longops` says (202 with the task; ``wait=true`` for the result)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from qx_node.api.errors import SafeJSONResponse, json_body
from qx_node.api.longops import WAIT, answer
from qx_node.clone import CLONE_SCHEMA, parse_clone
from qx_node.devices import (CDROM_SCHEMA, DISK_DEV_RE, DISK_SCHEMA, NIC_SCHEMA, parse_cdrom, parse_disk_body,
                             parse_nic)
from qx_node.errors import Conflict
from qx_node.node import Node
from qx_node.vmedit import VM_EDIT_SCHEMA, parse_vm_edit
from qx_node.snapshots import SNAPSHOT_SCHEMA, parse_snapshot_request
from qx_node.vmspec import NAME_RE, VM_SPEC_SCHEMA, parse_vm_spec

router = APIRouter(prefix="/v1/vms", tags=["vms"])

VmName = Annotated[str, Path(pattern=NAME_RE.pattern, description="the VM's name")]
DiskDev = Annotated[str, Path(pattern=DISK_DEV_RE, description="the disk's device name (vdb, sda...)")]
Mac = Annotated[str, Path(pattern=r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$", description="the NIC's MAC address")]
SnapName = Annotated[str, Path(pattern=NAME_RE.pattern, description="the snapshot's name")]


def _node(request: Request) -> Node:
    return request.app.state.node  # type: ignore[no-any-return]


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


_LONG = (" — a long operation: 202 at once with the task (Location: /v1/tasks/{id}), or with wait=true "
         "201 with the result when the task ends; refused at once (4xx, no task) when it cannot be done")


@router.get("", summary="List VMs")
async def list_vms(request: Request) -> JSONResponse:
    # One hop to a worker thread (libvirt may block), the answer rendered here: a sync route with a
    # list[dict] return type took two (FastAPI validates the return value on another worker thread,
    # against a model that checks nothing the OpenAPI document does not), each a wait under load.
    return SafeJSONResponse(await run_in_threadpool(_node(request).vms.list))


@router.post("", status_code=202, summary="Create (and by default start) a VM from a spec" + _LONG,
             openapi_extra=_body(VM_SPEC_SCHEMA))
async def create_vm(request: Request, wait: bool = WAIT) -> JSONResponse:
    spec = parse_vm_spec(await json_body(request))
    node = _node(request)
    task = await run_in_threadpool(node.vms.create_task, spec, node.tasks)
    return await answer(task, wait, lambda vm: f"/v1/vms/{vm['name']}")


@router.get("/{name}", summary="One VM")
def get_vm(request: Request, name: VmName) -> dict[str, Any]:
    return _node(request).vms.get(name)


@router.patch("/{name}", summary="Edit a VM: vcpus, memory (live where possible), name, description, tags, "
                                 "autostart; 'applied' says what took effect now and what at the next start",
              openapi_extra=_body(VM_EDIT_SCHEMA))
async def edit_vm(request: Request, name: VmName) -> JSONResponse:
    edit = parse_vm_edit(await json_body(request))
    vm = await run_in_threadpool(_node(request).vms.edit, name, edit)
    return SafeJSONResponse(vm, headers={"Location": f"/v1/vms/{vm['name']}"})


@router.post("/{name}/clone", status_code=202,
             summary="Clone a shut-off VM (full copy of its disks, new UUID and MACs)" + _LONG,
             openapi_extra=_body(CLONE_SCHEMA))
async def clone_vm(request: Request, name: VmName, wait: bool = WAIT) -> JSONResponse:
    req = parse_clone(await json_body(request))
    task = await run_in_threadpool(_node(request).cloner.clone, name, req)
    return await answer(task, wait, lambda vm: f"/v1/vms/{vm['name']}")


@router.delete("/{name}", summary="Delete a VM (disks are kept unless remove_disks=true); "
                                  "nothing is deleted when any part is refused")
def delete_vm(request: Request, name: VmName,
              remove_disks: bool = Query(False, description="also delete the VM's disks (volumes in the pool)"),
              force: bool = Query(False, description="power off a running VM first")) -> dict[str, Any]:
    return _node(request).vms.delete(name, remove_disks=remove_disks, force=force)


def _action(action: str, summary: str) -> None:
    def route(request: Request, name: VmName) -> dict[str, Any]:
        return _node(request).vms.action(name, action)

    route.__name__ = f"{action}_vm"
    router.add_api_route(f"/{{name}}/{action}", route, methods=["POST"], summary=summary)


for _a, _s in (("start", "Start"), ("shutdown", "ACPI shutdown (the guest decides)"),
               ("stop", "Power off at once"), ("reboot", "ACPI reboot"),
               ("pause", "Pause (the VM keeps its memory, its vCPUs stop)"), ("resume", "Resume a paused VM")):
    _action(_a, _s)


@router.get("/{name}/stats", summary="CPU, memory, disk and NIC counters; cpu_percent since the last call")
def vm_stats(request: Request, name: VmName) -> dict[str, Any]:
    return _node(request).vms.stats(name)


@router.get("/{name}/console", summary="Address of the VM's VNC console (loopback on the host)")
def vm_console(request: Request, name: VmName) -> dict[str, Any]:
    vm = _node(request).vms.get(name)
    if vm["console"] is None:
        raise Conflict(f"VM '{name}' has no console now (state {vm['state']})", hint="start the VM first")
    return vm["console"]  # type: ignore[no-any-return]


# -- devices ---------------------------------------------------------------------------------------
_LIVE = " 'applied' says whether the running VM has it now or gets it at the next start."


@router.post("/{name}/disks", tags=["devices"], summary="Add a disk: a new qcow2 volume (size_gib) or an existing "
                                                        "volume." + _LIVE, openapi_extra=_body(DISK_SCHEMA))
async def add_disk(request: Request, name: VmName) -> JSONResponse:
    spec = parse_disk_body(await json_body(request))
    vm = await run_in_threadpool(_node(request).devices.add_disk, name, spec)
    return SafeJSONResponse(vm, headers={"Location": f"/v1/vms/{name}"})


@router.delete("/{name}/disks/{dev}", tags=["devices"], summary="Remove a disk (its volume is kept unless "
                                                                "remove_volume=true, which needs the VM shut off)." + _LIVE)
def remove_disk(request: Request, name: VmName, dev: DiskDev,
                remove_volume: bool = Query(False, description="also delete the volume (VM shut off)")) -> dict[str, Any]:
    return _node(request).devices.remove_disk(name, dev, remove_volume)


@router.post("/{name}/nics", tags=["devices"], summary="Add a NIC on a host bridge or a libvirt network." + _LIVE,
             openapi_extra=_body(NIC_SCHEMA))
async def add_nic(request: Request, name: VmName) -> JSONResponse:
    req = parse_nic(await json_body(request))
    vm = await run_in_threadpool(_node(request).devices.add_nic, name, req)
    return SafeJSONResponse(vm, headers={"Location": f"/v1/vms/{name}"})


@router.delete("/{name}/nics/{mac}", tags=["devices"], summary="Remove the NIC with this MAC address." + _LIVE)
def remove_nic(request: Request, name: VmName, mac: Mac) -> dict[str, Any]:
    return _node(request).devices.remove_nic(name, mac)


@router.put("/{name}/cdrom", tags=["devices"], summary="Insert an ISO (a CD-ROM drive is added if the VM has none)."
            + _LIVE, openapi_extra=_body(CDROM_SCHEMA))
async def insert_media(request: Request, name: VmName) -> JSONResponse:
    volume = parse_cdrom(await json_body(request))
    return SafeJSONResponse(await run_in_threadpool(_node(request).devices.insert, name, volume))


@router.delete("/{name}/cdrom", tags=["devices"], summary="Eject the ISO (the drive stays)." + _LIVE)
def eject_media(request: Request, name: VmName) -> dict[str, Any]:
    return _node(request).devices.eject(name)


# -- snapshots --------------------------------------------------------------------------------
@router.get("/{name}/snapshots", tags=["snapshots"], summary="The VM's snapshots as a tree, and the current one")
def list_snapshots(request: Request, name: VmName) -> dict[str, Any]:
    return _node(request).snapshots.tree(name)


@router.post("/{name}/snapshots", tags=["snapshots"], status_code=202,
             summary="Take a snapshot (with the memory of a running VM unless memory=false)" + _LONG,
             openapi_extra=_body(SNAPSHOT_SCHEMA))
async def create_snapshot(request: Request, name: VmName, wait: bool = WAIT) -> JSONResponse:
    req = parse_snapshot_request(await json_body(request))
    node = _node(request)
    task = await run_in_threadpool(node.snapshots.create_task, name, req, node.tasks)
    return await answer(task, wait, lambda snap: f"/v1/vms/{name}/snapshots/{snap['name']}")


@router.get("/{name}/snapshots/{snapshot}", tags=["snapshots"], summary="One snapshot")
def get_snapshot(request: Request, name: VmName, snapshot: SnapName) -> dict[str, Any]:
    return _node(request).snapshots.get(name, snapshot)


@router.post("/{name}/snapshots/{snapshot}/revert", tags=["snapshots"],
             summary="Revert the VM to the snapshot (disks, and memory and power state when it has them)")
def revert_snapshot(request: Request, name: VmName, snapshot: SnapName) -> dict[str, Any]:
    return _node(request).snapshots.revert(name, snapshot)


@router.delete("/{name}/snapshots/{snapshot}", tags=["snapshots"],
               summary="Delete a snapshot (its children then hang from its parent)")
def delete_snapshot(request: Request, name: VmName, snapshot: SnapName) -> dict[str, Any]:
    return _node(request).snapshots.delete(name, snapshot)
