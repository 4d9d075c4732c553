"""Routes: /v1/networks — the host's bridges and VLAN interfaces, and libvirt networks for VMs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from qx_node.api.errors import SafeJSONResponse, json_body
from qx_node.networks import NETWORK_SCHEMA, parse_network
from qx_node.node import Node
from qx_node.vmspec import NAME_RE

router = APIRouter(prefix="/v1/networks", tags=["networks"])
NetName = Annotated[str, Path(pattern=NAME_RE.pattern, description="the libvirt network's name")]


def _node(request: Request) -> Node:
    return request.app.state.node  # type: ignore[no-any-return]


@router.get("", summary="Host bridges and VLAN interfaces (host) and the libvirt networks VMs can join (networks)")
def list_networks(request: Request) -> dict[str, Any]:
    return _node(request).networks.list()


@router.post("", status_code=201, summary="Create a network for VMs: on a host bridge (bridge) or as macvtap on a "
                                          "host interface such as a VLAN (interface); started and autostarted",
             openapi_extra={"requestBody": {"required": True,
                                            "content": {"application/json": {"schema": NETWORK_SCHEMA}}}})
async def create_network(request: Request) -> JSONResponse:
    req = parse_network(await json_body(request))
    net = await run_in_threadpool(_node(request).networks.create, req)
    return SafeJSONResponse(net, status_code=201, headers={"Location": f"/v1/networks/{req.name}"})


@router.get("/{name}", summary="One libvirt network")
def get_network(request: Request, name: NetName) -> dict[str, Any]:
    return _node(request).networks.get(name)


@router.delete("/{name}", summary="Delete a network (refused while a VM has a NIC on it)")
def delete_network(request: Request, name: NetName) -> dict[str, Any]:
    node = _node(request)
    with node.vms._mutate:  # no NIC can be added on it between the check and the delete
        return node.networks.delete(name)
