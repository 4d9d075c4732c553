"""Routes: /v1/storage — the pool, its volumes, ISO uploads."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from qx_node.api.errors import SafeJSONResponse, json_body
from qx_node.errors import InvalidField, printable
from qx_node.node import Node
from qx_node.storage import GiB
from qx_node.vmspec import VOLUME_RE, valid_volume_name

router = APIRouter(prefix="/v1/storage", tags=["storage"])

ISO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,122}\.iso$")
VolumeName = Annotated[str, Path(pattern=VOLUME_RE.pattern, description="a volume in the pool")]
IsoName = Annotated[str, Path(pattern=ISO_RE.pattern, description="the ISO's volume name (ending in .iso)")]
_UPLOAD_PATH = re.compile(r"/v1/storage/isos/[^/]+")


def is_upload(scope: dict[str, Any]) -> bool:
    """The streaming upload route, exempt from the small-JSON body limit (its limit is the pool's space)."""
    return scope.get("method") == "PUT" and bool(_UPLOAD_PATH.fullmatch(scope.get("path", "")))

_VOLUME_SCHEMA = {"type": "object", "required": ["name", "size_gib"], "additionalProperties": False,
                  "properties": {"name": {"type": "string", "pattern": VOLUME_RE.pattern},
                                 "size_gib": {"type": "integer", "minimum": 1, "maximum": 65536},
                                 "format": {"enum": ["qcow2", "raw"], "default": "qcow2"}}}


def _node(request: Request) -> Node:
    return request.app.state.node  # type: ignore[no-any-return]


@router.get("/pool", summary="The default pool: path, capacity, free space")
def get_pool(request: Request) -> dict[str, Any]:
    return _node(request).storage.pool_info()


@router.get("/volumes", summary="List volumes")
def list_volumes(request: Request) -> list[dict[str, Any]]:
    return [v.to_json() for v in _node(request).storage.list()]


@router.post("/volumes", status_code=201, summary="Create an empty volume",
             openapi_extra={"requestBody": {"required": True,
                                            "content": {"application/json": {"schema": _VOLUME_SCHEMA}}}})
async def create_volume(request: Request) -> JSONResponse:
    body = await json_body(request)
    if not isinstance(body, dict):
        raise InvalidField("body: must be a JSON object", field="body")
    for key in body:
        if key not in ("name", "size_gib", "format"):
            shown = printable(key) if key else '""'  # an empty key must still be named
            raise InvalidField(f"{shown}: unknown field", field=shown, hint="allowed: format, name, size_gib")
    name = valid_volume_name(body.get("name"), "name")  # type: ignore[arg-type]
    size = body.get("size_gib")
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= 65536:
        raise InvalidField("size_gib: must be an integer from 1 to 65536", field="size_gib")
    fmt = body.get("format", "qcow2")
    if fmt not in ("qcow2", "raw"):
        raise InvalidField("format: must be one of qcow2, raw", field="format")
    node = _node(request)

    def create() -> Any:
        node.vms.check_disk_space(size * GiB, "size_gib")  # unless overcommit_disk
        return node.storage.create(name, size * GiB, fmt)

    vol = await run_in_threadpool(create)
    return SafeJSONResponse(vol.to_json(), status_code=201)


@router.get("/volumes/{name}", summary="One volume")
def get_volume(request: Request, name: VolumeName) -> dict[str, Any]:
    return _node(request).storage.get(name).to_json()


@router.delete("/volumes/{name}", summary="Delete a volume (refused while a VM uses it as a disk, cdrom, kernel or initrd)")
def delete_volume(request: Request, name: VolumeName) -> dict[str, Any]:
    _node(request).vms.delete_volume(name)
    return {"name": name, "deleted": True}


@router.put("/isos/{name}", status_code=201,
            summary="Upload an ISO (raw request body) into the pool; atomic, refused before writing "
                    "when libvirtd is unreachable",
            openapi_extra={"requestBody": {"required": True, "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
async def upload_iso(request: Request, name: IsoName) -> JSONResponse:
    valid_volume_name(name)
    if not name.endswith(".iso"):
        raise InvalidField(f"name: '{name}' must end in .iso", field="name")
    length = request.headers.get("content-length")
    n = int(length) if length and length.isascii() and length.isdigit() else None
    node = _node(request)
    # A task too, so that other clients see the upload's progress (GET /v1/tasks, SSE) and can cancel it.
    with node.tasks.track("upload", name, cancellable=True) as task:
        vol = await node.storage.upload(name, request.stream(), n, task)
        task.result = vol.to_json()
    return SafeJSONResponse(vol.to_json(), status_code=201, headers={"X-Qx-Task": task.url})
