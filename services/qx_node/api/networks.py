"""Routes: /v1/networks — the host's bridges and VLAN interfaces, and libvirt networks for VMs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from qx_node.api.errors import SafeJSONResponse, json_body
from qx_node.lockdown import Locked, is_locked, lockdown_path
from qx_node.networks import NETWORK_SCHEMA, parse_network
from qx_node.node import Node
from qx_node.vmspec import NAME_RE

router = APIRouter(prefix="/v1/networks", tags=["networks"])
NetName = Annotated[str, Path(pattern=NAME_RE.pattern, description="the libvirt network's name")]


def _node(request: Request) -> Node:
    return request.app.state.node  # type: ignore[no-any-return]


def _refuse_while_locked(request: Request) -> None:
    """A VLAN network changes the host's network configuration: refused in lockdown mode, like every
    host change (qx_node.lockdown); networks on existing bridges and interfaces are VM configuration."""
    if is_locked(lockdown_path(request)):
        raise Locked("vlan: the host is in lockdown mode: its network configuration cannot be changed through "
                     "the API", field="vlan", hint="turn lockdown mode off at the host's console, then retry")


@router.get("", summary="Host bridges and VLAN interfaces (host) and the libvirt networks VMs can join (networks)")
def list_networks(request: Request) -> dict[str, Any]:
    return _node(request).networks.list()


@router.post("", status_code=201, summary="Create a network for VMs: on a host bridge (bridge), as macvtap on a "
                                          "host interface (interface), or on a VLAN of the management adapter "
                                          "(vlan: the host's networkd configuration gets the VLAN and bridge "
                                          "qxbr<vlan>, applied safely); started and autostarted",
             openapi_extra={"requestBody": {"required": True,
                                            "content": {"application/json": {"schema": NETWORK_SCHEMA}}}})
async def create_network(request: Request) -> JSONResponse:
    req = parse_network(await json_body(request))
    if req.vlan is not None:
        _refuse_while_locked(request)
    net = await run_in_threadpool(_node(request).networks.create, req)
    return SafeJSONResponse(net, status_code=201, headers={"Location": f"/v1/networks/{req.name}"})


@router.get("/{name}", summary="One libvirt network")
def get_network(request: Request, name: NetName) -> dict[str, Any]:
    return _node(request).networks.get(name)


@router.delete("/{name}", summary="Delete a network (refused while a VM has a NIC on it)")
def delete_network(request: Request, name: NetName) -> dict[str, Any]:
    node = _node(request)
    if node.networks.get(name)["vlan"] is not None:
        _refuse_while_locked(request)
    with node.vms._mutate:  # no NIC can be added on it between the check and the delete
        return node.networks.delete(name)
